"""Archive extraction: every kind works, every malicious kind is refused, nothing escapes DEST."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelport.storage.download import download
from modelport.storage.errors import ArchiveError
from tests.storage.archives import FILES, benign, malicious, tar_bytes, zip_bytes
from tests.storage.support import tree


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tgz"])
def test_each_archive_kind_extracts(tmp_path, kind):
    src = tmp_path / "src" / f"model.{kind}"
    src.parent.mkdir()
    src.write_bytes(benign(kind))
    out = download(str(src), tmp_path / "dest")
    assert tree(out) == FILES


@pytest.mark.parametrize("case", sorted(malicious()))
def test_malicious_archive_refused_and_nothing_escapes(tmp_path, case):
    name, data, entry = malicious()[case]
    sandbox = tmp_path / "sandbox"
    (sandbox / "src").mkdir(parents=True)
    (sandbox / "src" / name).write_bytes(data)
    dest = sandbox / "deep" / "dest"
    dest.mkdir(parents=True)
    (dest / "existing.txt").write_text("keep")
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError) as err:
        download(str(sandbox / "src" / name), dest)
    assert repr(entry) in str(err.value) or entry in str(err.value)
    # Nothing new anywhere, inside or outside DEST, and DEST is as it was.
    assert snapshot(tmp_path) == before
    assert tree(dest) == {"existing.txt": b"keep"}
    assert not Path("/tmp/abs-escaped.txt").exists()


def test_safe_symlinks_and_hardlinks_inside_are_kept(tmp_path):
    import tarfile

    link = tarfile.TarInfo("alias.joblib")
    link.type, link.linkname = tarfile.SYMTYPE, "model.joblib"
    hard = tarfile.TarInfo("copy.joblib")
    hard.type, hard.linkname = tarfile.LNKTYPE, "model.joblib"
    src = tmp_path / "m.tar"
    src.write_bytes(tar_bytes([("model.joblib", b"abc"), link, hard]))
    out = download(str(src), tmp_path / "d")
    assert tree(out) == {
        "model.joblib": b"abc",
        "alias.joblib": "-> model.joblib",
        "copy.joblib": b"abc",
    }


def test_zip_bomb_caps(tmp_path, monkeypatch):
    src = tmp_path / "bomb.zip"
    src.write_bytes(zip_bytes([("zeros.bin", b"\0" * (4 * 1024 * 1024))]))
    monkeypatch.setenv("MODELPORT_STORAGE_MAX_ARCHIVE_BYTES", str(1024 * 1024))
    with pytest.raises(ArchiveError, match="MAX_ARCHIVE_BYTES"):
        download(str(src), tmp_path / "d1")
    monkeypatch.delenv("MODELPORT_STORAGE_MAX_ARCHIVE_BYTES")
    many = tmp_path / "many.zip"
    many.write_bytes(zip_bytes([(f"f{i}", b"") for i in range(50)]))
    monkeypatch.setenv("MODELPORT_STORAGE_MAX_ARCHIVE_ENTRIES", "10")
    with pytest.raises(ArchiveError, match="MAX_ARCHIVE_ENTRIES"):
        download(str(many), tmp_path / "d2")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_tar_bomb_cap_counts_real_bytes(tmp_path, monkeypatch):
    src = tmp_path / "bomb.tar.gz"
    src.write_bytes(tar_bytes([("zeros.bin", b"\0" * (3 * 1024 * 1024))], "w:gz"))
    assert src.stat().st_size < 64 * 1024
    monkeypatch.setenv("MODELPORT_STORAGE_MAX_ARCHIVE_BYTES", str(1024 * 1024))
    with pytest.raises(ArchiveError, match="expands beyond"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_not_an_archive(tmp_path):
    src = tmp_path / "model.zip"
    src.write_bytes(b"this is not a zip")
    with pytest.raises(ArchiveError, match="not an archive"):
        download(str(src), tmp_path / "d")
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ArchiveError, match=r"not an archive|corrupt"):
        download(str(bad), tmp_path / "d")


def test_patterns_filter_archive_members(tmp_path, monkeypatch):
    src = tmp_path / "m.zip"
    src.write_bytes(zip_bytes(list(FILES.items())))  # type: ignore[arg-type]
    monkeypatch.setenv("STORAGE_ALLOW_PATTERNS", "*.joblib")
    assert tree(download(str(src), tmp_path / "d")) == {"model.joblib": b"joblib-bytes"}


def test_zip_file_modes_are_sane(tmp_path):
    info = zipfile.ZipInfo("run.sh")
    info.external_attr = (0o104755) << 16  # setuid + exec
    src = tmp_path / "m.zip"
    src.write_bytes(zip_bytes([(info, b"#!/bin/sh\n")]))
    out = download(str(src), tmp_path / "d")
    assert os.stat(out / "run.sh").st_mode & 0o7777 == 0o755


def test_hardlink_copies_count_toward_the_byte_cap(tmp_path, monkeypatch):
    import tarfile

    # One 256 KiB file and 20 hardlinks to it: 5.25 MiB on disk from a few-KiB archive.
    links = []
    for i in range(20):
        hard = tarfile.TarInfo(f"h{i}")
        hard.type, hard.linkname = tarfile.LNKTYPE, "big"
        links.append(hard)
    src = tmp_path / "m.tar.gz"
    src.write_bytes(tar_bytes([("big", b"\0" * (256 * 1024)), *links], "w:gz"))
    assert src.stat().st_size < 64 * 1024
    monkeypatch.setenv("MODELPORT_STORAGE_MAX_ARCHIVE_BYTES", str(1024 * 1024))
    with pytest.raises(ArchiveError, match="expands beyond"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_zip_symlink_with_oversized_target_refused(tmp_path):
    import stat

    # A "link target" of 1 MiB compresses to about a kilobyte; it used to be read whole into
    # memory (a few MB here, gigabytes for a crafted entry) before anything checked it.
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    src = tmp_path / "m.zip"
    src.write_bytes(zip_bytes([("model.joblib", b"abc"), (info, b"a" * (1024 * 1024))]))
    assert src.stat().st_size < 16 * 1024
    with pytest.raises(ArchiveError, match="'link': symlink target longer than 4096 bytes"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_zip_symlink_with_ordinary_target_kept(tmp_path):
    import stat

    info = zipfile.ZipInfo("alias.joblib")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    src = tmp_path / "m.zip"
    src.write_bytes(zip_bytes([("model.joblib", b"abc"), (info, b"model.joblib")]))
    out = download(str(src), tmp_path / "d")
    assert tree(out) == {"model.joblib": b"abc", "alias.joblib": "-> model.joblib"}


@pytest.mark.parametrize("second", ["a/b", "a/b/c", "a/d/"])
def test_file_then_entry_below_it_is_an_archive_error(tmp_path, second):
    import tarfile

    if second.endswith("/"):
        below: tarfile.TarInfo | tuple[str, bytes] = tarfile.TarInfo(second.rstrip("/"))
        below.type = tarfile.DIRTYPE
    else:
        below = (second, b"y")
    src = tmp_path / "m.tar"
    src.write_bytes(tar_bytes([("a", b"x"), below]))
    with pytest.raises(ArchiveError) as err:
        download(str(src), tmp_path / "d")
    assert "conflicts with an earlier file" in str(err.value)
    assert repr(second.rstrip("/")) in str(err.value)
    # The message names the entry, never the hidden staging directory.
    assert ".modelport-download-" not in str(err.value)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("where", ["data", "crc"])
def test_tar_gz_failing_its_gzip_crc_is_refused(tmp_path, where):
    # tarfile stops reading at the end-of-archive blocks, before the gzip trailer, so the
    # CRC-32 that detects damaged bytes was never checked and the damaged model was published.
    payload = os.urandom(50_000)  # incompressible: deflate stores it, a flipped byte decodes
    data = bytearray(tar_bytes([("model.bin", payload)], "w:gz"))
    data[len(data) // 2 if where == "data" else len(data) - 8] ^= 0xFF
    src = tmp_path / "model.tar.gz"
    src.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt archive: CRC check failed"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_damaged_compressed_data_is_an_archive_error(tmp_path, kind):
    # Damaged deflate data raised a raw zlib.error ("Error -3 while decompressing data"): the
    # CLI reported a generic error instead of naming the archive as corrupt.
    payload = b"".join(b"weight %d\n" % i for i in range(30000))  # compressible
    data = (
        tar_bytes([("model.bin", payload)], "w:gz")
        if kind == "tar.gz"
        else zip_bytes([("model.bin", payload)])
    )
    for pos in range(100, len(data) - 100, len(data) // 7):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        src = tmp_path / f"{pos}.{kind}"
        src.write_bytes(bytes(bad))
        with pytest.raises(ArchiveError, match=r"corrupt|not an archive"):
            download(str(src), tmp_path / "d")
        assert not (tmp_path / "d").exists()


def test_zip_with_header_offsets_before_the_file_is_an_archive_error(tmp_path):
    # An end record that puts the central directory further than it is shifts every local
    # header offset below 0: zipfile's seek raised a raw OSError (EINVAL), a generic error.
    data = bytearray(zip_bytes([("model.bin", b"w" * 1000)]))
    eocd = data.rindex(b"PK\x05\x06")
    offset = int.from_bytes(data[eocd + 16 : eocd + 20], "little")
    data[eocd + 16 : eocd + 20] = (offset + 5000).to_bytes(4, "little")
    src = tmp_path / "model.zip"
    src.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt archive"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_oversized_tar_name_header_is_refused_before_it_is_read(tmp_path, fmt):
    # tarfile reads a GNU long-name or pax header whole into memory, outside the byte cap: a
    # 300 KB .tar.gz holding a 300 MB name took 1.5 GB of memory (an OOM-kill in a small init
    # container), then failed with a raw OSError whose one line held the whole name.
    buf = io.BytesIO()
    tar_format = tarfile.GNU_FORMAT if fmt == "gnu" else tarfile.PAX_FORMAT
    with tarfile.open(fileobj=buf, mode="w:gz", format=tar_format) as tf:
        info = tarfile.TarInfo("a" * 8 * 1024 * 1024)
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    src = tmp_path / "model.tar.gz"
    src.write_bytes(buf.getvalue())
    with pytest.raises(ArchiveError, match=r"header of \d+ bytes, over the 1048576 limit") as e:
        download(str(src), tmp_path / "d")
    assert len(str(e.value)) < 500
    assert not (tmp_path / "d").exists()


def test_member_name_longer_than_the_filesystem_allows_is_an_archive_error(tmp_path):
    # ENAMETOOLONG escaped as a raw OSError naming the staging path: a generic error.
    src = tmp_path / "model.tar"
    src.write_bytes(tar_bytes([("model.joblib", b"m"), ("sub/" + "a" * 300, b"x")]))
    with pytest.raises(ArchiveError, match="longer than 255 bytes"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_hardlink_to_a_member_the_patterns_leave_out_is_kept(tmp_path, monkeypatch):
    # A hardlink's content is its target member's: the target not being wanted in DEST does
    # not make the link's content unknown (it was refused as "not an extracted file").
    hard = tarfile.TarInfo("model/weights.bin")
    hard.type, hard.linkname = tarfile.LNKTYPE, "blobs/sha256-abc"
    src = tmp_path / "m.tar"
    src.write_bytes(tar_bytes([("blobs/sha256-abc", b"w" * 1000), hard]))
    monkeypatch.setenv("STORAGE_ALLOW_PATTERNS", "model/*")
    assert tree(download(str(src), tmp_path / "d")) == {"model/weights.bin": b"w" * 1000}
