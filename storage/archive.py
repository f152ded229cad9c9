"""Safe extraction of .zip/.tar/.tar.gz/.tgz model archives.

Each entry is checked before anything is written: no absolute paths, no ``..``, no device or
FIFO entries, symlinks and hardlinks must resolve inside DEST, and parent directories are
resolved with ``realpath`` before they are created, so an earlier symlink cannot redirect a later
write outside DEST. Entry count and real (not declared) uncompressed bytes are capped against
archive bombs, and so are tar long-name/pax headers, which tarfile reads whole into memory.
A final pass re-checks every symlink, because a link created later can change where an
earlier relative link points. A compressed tar is read to the end of its stream, so
gzip's CRC-32 is checked; damaged compressed data is a corrupt archive.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

from modelport.storage.config import Patterns, Transfer
from modelport.storage.errors import ArchiveError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/zip-compressed")
TAR_TYPES = ("application/x-tar", "application/x-gtar", "application/x-tgz")
GZIP_TYPES = ("application/gzip", "application/x-gzip", "application/x-compressed-tar")
_CHUNK = 1024 * 1024
_MAX_LINK_TARGET = 4096  # PATH_MAX on Linux: no real symlink target is longer
_NAME_MAX = 255  # bytes in one path component (Linux filesystems)
# tarfile reads a GNU long-name/long-link or pax header whole into memory: bounded per header
# (a name is at most PATH_MAX; pax records with xattrs stay far below this) and in all.
_MAX_TAR_HEADER = 1024 * 1024
_MAX_TAR_HEADERS_TOTAL = 256 * 1024 * 1024
_TAR_HEADER_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


def archive_suffix(name: str) -> str | None:
    """The archive suffix of a file name (case-insensitive), or None for a plain file."""
    lower = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), None)


def content_type_says_archive(content_type: str | None) -> bool:
    """True for zip/tar/gzip media types (parameters such as ``; charset`` ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ZIP_TYPES + TAR_TYPES + GZIP_TYPES


def looks_like_archive(path: Path) -> bool:
    """Sniff the content: a zip, or a tar (plain or compressed). Not tarfile.is_tarfile: it
    reads the first header with no bound (see :func:`_bounded_tarinfo`)."""
    if zipfile.is_zipfile(path):
        return True
    try:
        with tarfile.open(path, "r:*", tarinfo=_bounded_tarinfo(str(path))):
            return True
    except ArchiveError:
        return True  # a tar, if a hostile one: extraction refuses it, naming the URI
    except (OSError, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError):
        return False


def _safe_relpath(name: str) -> str:
    """Normalise an entry name to a relative ``/`` path, or raise ValueError with the reason."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValueError("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("path traversal ('..')")
    if any("\x00" in p for p in parts):
        raise ValueError("NUL byte in name")
    # NAME_MAX: S3/GCS keys and archive names may be longer; the write would fail with a raw
    # ENAMETOOLONG naming the staging path.
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in parts):
        raise ValueError(f"a path component longer than {_NAME_MAX} bytes")
    return "/".join(parts)


class _Extractor:
    """Writes entries under ``root`` (real path) enforcing every rule of the module docstring."""

    def __init__(self, uri: str, root: Path, transfer: Transfer, patterns: Patterns) -> None:
        self.uri = uri
        self.root = os.path.realpath(root)
        self.transfer = transfer
        self.patterns = patterns
        self.entries = 0
        self.bytes = 0
        self.files = 0
        self.left_out: set[str] = set()  # regular files the patterns kept out of DEST

    def fail(self, entry: str, why: str) -> ArchiveError:
        return ArchiveError(self.uri, f"unsafe archive entry {entry!r}: {why}")

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def count(self, entry: str) -> None:
        self.entries += 1
        if self.entries > self.transfer.max_archive_entries:
            raise ArchiveError(
                self.uri,
                f"archive has more than {self.transfer.max_archive_entries} entries "
                "(MODELPORT_STORAGE_MAX_ARCHIVE_ENTRIES)",
            )

    def rel(self, entry: str) -> str:
        try:
            return _safe_relpath(entry)
        except ValueError as exc:
            raise self.fail(entry, str(exc)) from None

    def parent_dir(self, entry: str, rel: str) -> str:
        """Resolve and create the parent directory of ``rel``; it must stay inside root."""
        parent = os.path.realpath(os.path.join(self.root, os.path.dirname(rel)))
        if not self._inside(parent):
            raise self.fail(entry, "parent directory resolves outside the destination (symlink)")
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # An earlier entry put a file where this one needs a directory ("a", then "a/b").
            # That is a malformed archive; the raw OSError would name the staging path instead.
            raise self.fail(entry, "a parent directory conflicts with an earlier file") from None
        return parent

    def _clear(self, entry: str, target: str) -> None:
        if os.path.isdir(target) and not os.path.islink(target):
            raise self.fail(entry, "conflicts with an existing directory")
        if os.path.lexists(target):
            os.unlink(target)

    def directory(self, entry: str) -> None:
        self.count(entry)
        rel = self.rel(entry)
        if not rel:
            return
        target = os.path.join(self.parent_dir(entry, rel), os.path.basename(rel))
        if os.path.islink(target) or (os.path.exists(target) and not os.path.isdir(target)):
            raise self.fail(entry, "directory conflicts with an existing file or link")
        os.makedirs(target, mode=0o755, exist_ok=True)

    def file(self, entry: str, src: IO[bytes], mode: int) -> None:
        self.count(entry)
        rel = self.rel(entry)
        if not rel:
            return
        if not self.patterns.wants(rel):
            self.left_out.add(rel)
            return
        self._write(entry, rel, src, mode)

    def _write(self, entry: str, rel: str, src: IO[bytes], mode: int) -> None:
        target = os.path.join(self.parent_dir(entry, rel), os.path.basename(rel))
        self._clear(entry, target)
        perm = 0o755 if mode & 0o111 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perm)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.add_bytes(len(chunk))
                out.write(chunk)
        self.files += 1

    def add_bytes(self, n: int) -> None:
        """Count ``n`` more bytes written to disk; refuse once the cap is passed."""
        self.bytes += n
        if self.bytes > self.transfer.max_archive_bytes:
            raise ArchiveError(
                self.uri,
                f"archive expands beyond {self.transfer.max_archive_bytes} bytes "
                "(MODELPORT_STORAGE_MAX_ARCHIVE_BYTES)",
            )

    def symlink(self, entry: str, link_target: str) -> None:
        self.count(entry)
        rel = self.rel(entry)
        if not rel or not self.patterns.wants(rel):
            return
        if link_target.startswith("/") or not link_target:
            raise self.fail(entry, f"symlink to absolute path {link_target!r}")
        parent = self.parent_dir(entry, rel)
        if not self._inside(os.path.realpath(os.path.join(parent, link_target))):
            raise self.fail(entry, f"symlink points outside the destination ({link_target!r})")
        target = os.path.join(parent, os.path.basename(rel))
        self._clear(entry, target)
        os.symlink(link_target, target)

    def hardlink(
        self, entry: str, link_name: str, mode: int, data: Callable[[], IO[bytes] | None]
    ) -> None:
        """Copy the target's content; ``data`` opens it from the archive, for a target the
        patterns left out of DEST (its content is still the link's)."""
        self.count(entry)
        rel = self.rel(entry)
        if not rel or not self.patterns.wants(rel):
            return
        try:
            src_rel = _safe_relpath(link_name)
        except ValueError as exc:
            raise self.fail(entry, f"hardlink target {link_name!r}: {exc}") from None
        if src_rel in self.left_out and not os.path.lexists(os.path.join(self.root, src_rel)):
            src = data()
            if src is None:
                raise self.fail(entry, f"hardlink target {link_name!r} has no content")
            with src:
                self._write(entry, rel, src, mode)
            return
        source = os.path.realpath(os.path.join(self.root, src_rel))
        if not self._inside(source):
            raise self.fail(entry, f"hardlink points outside the destination ({link_name!r})")
        if not os.path.isfile(source):
            raise self.fail(entry, f"hardlink target {link_name!r} is not an extracted file")
        target = os.path.join(self.parent_dir(entry, rel), os.path.basename(rel))
        self._clear(entry, target)
        # The copy costs disk like a regular file, so it counts toward the cap before it is
        # written: otherwise one small file and many hardlinks to it are an archive bomb.
        self.add_bytes(os.path.getsize(source))
        shutil.copyfile(source, target)  # a copy: never share an inode with anything
        self.files += 1

    def recheck_links(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) and not self._inside(os.path.realpath(path)):
                    rel = os.path.relpath(path, self.root)
                    os.unlink(path)
                    raise self.fail(rel, "symlink resolves outside the destination")


def _bounded_tarinfo(uri: str) -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses an oversized long-name or pax header before tarfile reads
    it: a tiny .tar.gz can hold a name of gigabytes, read into memory outside the byte cap."""
    total = [0]

    class _Bounded(tarfile.TarInfo):
        def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _TAR_HEADER_TYPES:
                total[0] += self.size
                if self.size > _MAX_TAR_HEADER or total[0] > _MAX_TAR_HEADERS_TOTAL:
                    limit = _MAX_TAR_HEADER if self.size > _MAX_TAR_HEADER else None
                    raise ArchiveError(
                        uri,
                        f"tar long-name/pax header of {self.size} bytes, over the "
                        + (f"{limit} limit" if limit else f"{_MAX_TAR_HEADERS_TOTAL} total limit"),
                    )
            member: tarfile.TarInfo = super()._proc_member(tf)  # type: ignore[misc]
            return member

    return _Bounded


def _tar_entries(ex: _Extractor, tf: tarfile.TarFile) -> None:
    for member in tf:
        if member.isdir():
            ex.directory(member.name)
        elif member.isreg():
            src = tf.extractfile(member)
            assert src is not None
            with src:
                ex.file(member.name, src, member.mode)
        elif member.issym():
            ex.symlink(member.name, member.linkname)
        elif member.islnk():
            ex.hardlink(member.name, member.linkname, member.mode, partial(tf.extractfile, member))
        elif member.ischr() or member.isblk():
            raise ex.fail(member.name, "device file")
        elif member.isfifo():
            raise ex.fail(member.name, "FIFO")
        else:
            raise ex.fail(member.name, f"unsupported tar entry type {member.type!r}")


def _drain(ex: _Extractor, tf: tarfile.TarFile) -> None:
    """Read the compressed stream to its end, so gzip checks its CRC-32 and length (xz and bz2
    their checks): tarfile stops at the end-of-archive blocks, before the trailer, and damaged
    bytes would be published. What follows the archive counts toward the byte cap."""
    assert tf.fileobj is not None
    while chunk := tf.fileobj.read(_CHUNK):
        ex.add_bytes(len(chunk))


def _zip_open(ex: _Extractor, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """Open an entry; an OSError here is the archive's fault (a header offset that points
    before the file makes the seek fail with EINVAL), not the disk's: a corrupt archive."""
    try:
        return zf.open(info)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        name = os.path.basename(zf.filename or "archive")
        raise ArchiveError(
            ex.uri, f"{name} is a corrupt archive: cannot read entry {info.filename!r} ({why})"
        ) from None


def _zip_link_target(ex: _Extractor, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """The target of a zip symlink entry, read with a hard bound.

    A link target is a path, never more than PATH_MAX; reading the entry whole would let a
    small, highly compressed entry claim gigabytes of memory. The declared size is checked
    first, and the read is bounded too because the declared size can lie.
    """
    if info.file_size > _MAX_LINK_TARGET:
        raise ex.fail(info.filename, f"symlink target longer than {_MAX_LINK_TARGET} bytes")
    with _zip_open(ex, zf, info) as src:
        data = src.read(_MAX_LINK_TARGET + 1)
    if len(data) > _MAX_LINK_TARGET:
        raise ex.fail(info.filename, f"symlink target longer than {_MAX_LINK_TARGET} bytes")
    return data.decode("utf-8", "replace")


def _zip_entries(ex: _Extractor, zf: zipfile.ZipFile) -> None:
    infos = zf.infolist()
    if len(infos) > ex.transfer.max_archive_entries:
        ex.entries = len(infos) - 1
        ex.count(infos[-1].filename)
    declared = sum(i.file_size for i in infos)
    if declared > ex.transfer.max_archive_bytes:
        raise ArchiveError(
            ex.uri,
            f"archive declares {declared} uncompressed bytes, over the "
            f"{ex.transfer.max_archive_bytes} limit (MODELPORT_STORAGE_MAX_ARCHIVE_BYTES)",
        )
    for info in infos:
        unix_mode = info.external_attr >> 16
        kind = stat.S_IFMT(unix_mode)
        if info.is_dir():
            ex.directory(info.filename)
        elif kind == stat.S_IFLNK:
            ex.symlink(info.filename, _zip_link_target(ex, zf, info))
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise ex.fail(info.filename, "device, FIFO or socket entry")
        else:
            with _zip_open(ex, zf, info) as src:
                ex.file(info.filename, src, unix_mode)


def extract(archive: Path, dest: Path, uri: str, transfer: Transfer, patterns: Patterns) -> int:
    """Extract ``archive`` into ``dest`` (which must exist); return the number of files."""
    ex = _Extractor(uri, dest, transfer, patterns)
    name = archive.name
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _zip_entries(ex, zf)
        else:
            if not looks_like_archive(archive):
                raise ArchiveError(uri, f"{name} is not an archive (zip, tar, tar.gz)")
            with tarfile.open(archive, "r:*", tarinfo=_bounded_tarinfo(uri)) as tf:
                _tar_entries(ex, tf)
                _drain(ex, tf)
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        gzip.BadGzipFile,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise ArchiveError(uri, f"{name} is a corrupt archive: {exc}") from None
    ex.recheck_links()
    if ex.files == 0:
        raise ArchiveError(
            uri, f"{name} holds no files" + (" matching the patterns" if patterns else "")
        )
    return ex.files
