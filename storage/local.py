"""Local paths, file:// and pvc:// (which KServe's webhook mounts at /mnt/pvc/<path>).

Like KServe, files are symlinked into DEST (the PVC is mounted in the server container too, so
nothing is copied); ``MODELPORT_STORAGE_LOCAL_COPY=true`` copies instead. Directories are
recreated for real so patterns can pick individual files; a symlinked directory in the source
is followed like a symlinked file (a link back to one of its own ancestors is an error), and a
directory that cannot be read is an error, never a silently partial model. A ``pvc://`` path,
and every file below it (symlinks included), must resolve inside the PVC mount.

A source that is DEST itself is already in place (nothing is done, as KServe leaves existing
entries alone); one inside DEST is refused (publishing would set it aside and delete it); DEST
inside the source is skipped while walking it (else each run nests a copy of DEST in DEST).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modelport.storage.config import _truthy
from modelport.storage.errors import ConfigError, NotFoundError, StorageError
from modelport.storage.job import Job

PVC_ROOT_ENV = "MODELPORT_PVC_ROOT"


def source_path(uri: str) -> Path:
    """Map ``file://``, ``pvc://claim/path`` and plain paths to a local path."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("pvc://"):
        rest = uri[len("pvc://") :].split("/", 1)
        root = os.environ.get(PVC_ROOT_ENV, "/mnt/pvc")
        path = Path(root, rest[1] if len(rest) > 1 else "")
        # The URI names a path on the claim: ".." (or a symlink) leading out of the mount
        # would read the initializer's own filesystem (/etc, service-account tokens...).
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if not _inside(real, real_root):
            raise ConfigError(uri, f"path resolves outside the PVC mount {root}")
        return path
    return Path(uri)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_destination(uri: str, dest: Path) -> bool:
    """True if the source is ``dest`` itself; raises ConfigError if it lies inside ``dest``.

    Linking a file onto itself replaced it by a symlink to itself and deleted the file, and a
    source below DEST is set aside and deleted when DEST's entries are replaced.
    """
    src = source_path(uri)
    real_src, real_dest = os.path.realpath(src), os.path.realpath(dest)
    if real_src == real_dest:
        return True
    if _inside(real_src, real_dest):
        raise ConfigError(uri, f"source {src} is inside the destination {dest}")
    return False


def _walk(uri: str, src: Path, skip: Path | None = None) -> list[tuple[Path, str]]:
    """(path, relative name) of every non-directory below ``src``, following symlinked
    directories, leaving out the directory ``skip`` (DEST, when it is inside the source);
    raises on an unreadable directory or a symlink loop."""
    found: list[tuple[Path, str]] = []
    # (directory, its relative name, (dev, inode) of it and its ancestors): a directory whose
    # identity is among its ancestors is a loop; the same directory reached by two links that
    # are not nested is simply brought along twice.
    stack: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [(src, "", frozenset())]
    skipped = None
    if skip is not None and skip.exists():
        st = os.stat(skip)
        skipped = (st.st_dev, st.st_ino)
    while stack:
        directory, rel, ancestors = stack.pop()
        shown = rel or "."
        try:
            st = os.stat(directory)
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StorageError(uri, f"cannot read directory {shown!r}: {reason}") from None
        if (st.st_dev, st.st_ino) == skipped:
            continue
        here = ancestors | {(st.st_dev, st.st_ino)}
        if len(here) == len(ancestors):
            raise StorageError(uri, f"directory {shown!r} is a symlink to one of its ancestors")
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False  # unreachable target: handled like a broken file link
            if is_dir:
                stack.append((Path(entry.path), child, here))
            else:
                found.append((Path(entry.path), child))
    return found


def _confine_to_pvc(uri: str, files: list[tuple[Path, str]]) -> None:
    """Every file must resolve on the claim, as the URI's own path must: a symlink below it
    leading out of the mount would bring the initializer's own files into DEST."""
    root = os.environ.get(PVC_ROOT_ENV, "/mnt/pvc")
    real_root = os.path.realpath(root)
    for path, rel in files:
        if not _inside(os.path.realpath(path), real_root):
            raise ConfigError(uri, f"{rel!r} resolves outside the PVC mount {root}")


def _copy(uri: str, path: Path, target: Path, rel: str) -> None:
    """Copy one file; a source that cannot be copied (a dangling link, a FIFO, no permission)
    is one clear error naming it, not shutil's OSError naming the staging path."""
    try:
        shutil.copy2(path, target)
    except OSError as exc:
        reason = exc.strerror or str(exc).replace(str(path), rel)
        raise StorageError(uri, f"cannot copy {rel!r}: {reason}") from None


def fetch(job: Job) -> list[str]:
    """Link (or copy) the file or the tree below the directory into ``job.payload``."""
    src = source_path(job.uri)
    if not src.exists():
        where = "for PVC " if job.uri.startswith(("pvc://", "/mnt/pvc")) else ""
        raise NotFoundError(job.uri, f"cannot locate source path {where}{src}")
    copy = _truthy(os.environ.get("MODELPORT_STORAGE_LOCAL_COPY"))
    if src.is_file():
        files, single = [(src, src.name)], True
    else:
        files = _walk(job.uri, src, job.dest)
        single = False
    if job.uri.startswith("pvc://"):
        _confine_to_pvc(job.uri, files)
    listed = len(files)
    files = [(p, rel) for p, rel in files if job.keep(rel, single)]
    if not files:
        raise job.nothing_found(str(src), listed)
    for path, rel in files:
        target = job.target(rel)
        if copy:
            _copy(job.uri, path, target, rel)
            job.progress.add(target.stat().st_size)
        else:
            os.symlink(path.resolve(), target)
        job.progress.file_done()
    return [rel for _, rel in files]
