"""Builders for benign and malicious archives (bytes), shared by the archive and HTTP tests."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

FILES = {"model.joblib": b"joblib-bytes", "sub/config.json": b"{}"}


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def zip_bytes(
    members: list[tuple[str, bytes] | zipfile.ZipInfo | tuple[zipfile.ZipInfo, bytes]],
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for m in members:
            if isinstance(m, tuple) and isinstance(m[0], zipfile.ZipInfo):
                zf.writestr(m[0], m[1])
            else:
                name, data = m  # type: ignore[misc]
                zf.writestr(name, data)
    return buf.getvalue()


def benign(kind: str) -> bytes:
    items = list(FILES.items())
    if kind == "zip":
        return zip_bytes(items)  # type: ignore[arg-type]
    return tar_bytes(items, "w:gz" if kind in ("tar.gz", "tgz") else "w")  # type: ignore[arg-type]


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def malicious() -> dict[str, tuple[str, bytes, str]]:
    """id -> (archive file name, bytes, entry name the error must mention)."""
    dev = tarfile.TarInfo("dev/null-ish")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    return {
        "tar-dotdot": (
            "m.tar",
            tar_bytes([("ok.txt", b"1"), ("../escaped.txt", b"x")]),
            "../escaped.txt",
        ),
        "tar-absolute": (
            "m.tar",
            tar_bytes([("/tmp/abs-escaped.txt", b"x")]),
            "/tmp/abs-escaped.txt",
        ),
        "tgz-dotdot-nested": (
            "m.tgz",
            tar_bytes([("a/b/../../../escaped.txt", b"x")], "w:gz"),
            "a/b/../../../escaped.txt",
        ),
        "tar-symlink-out": (
            "m.tar",
            tar_bytes([_link("link", "../outside", tarfile.SYMTYPE)]),
            "link",
        ),
        "tar-symlink-abs": (
            "m.tar",
            tar_bytes([_link("link", "/etc/passwd", tarfile.SYMTYPE)]),
            "link",
        ),
        "tar-symlink-then-write": (
            "m.tar",
            tar_bytes([_link("up", "..", tarfile.SYMTYPE), ("up/escaped.txt", b"x")]),
            "up",
        ),
        "tar-symlink-retargeted-later": (
            "m.tar",
            # "a" -> "b/../y" is inside while "b" does not exist; "b" -> "." then makes it escape.
            tar_bytes([_link("a", "b/../y", tarfile.SYMTYPE), _link("b", ".", tarfile.SYMTYPE)]),
            "a",
        ),
        "tar-hardlink-out": (
            "m.tar",
            tar_bytes([_link("hl", "../outside", tarfile.LNKTYPE)]),
            "hl",
        ),
        "tar-hardlink-abs": (
            "m.tar",
            tar_bytes([_link("hl", "/etc/passwd", tarfile.LNKTYPE)]),
            "hl",
        ),
        "tar-device": ("m.tar", tar_bytes([dev]), "dev/null-ish"),
        "tar-fifo": ("m.tar", tar_bytes([fifo]), "pipe"),
        "zip-dotdot": (
            "m.zip",
            zip_bytes([("ok.txt", b"1"), ("../escaped.txt", b"x")]),
            "../escaped.txt",
        ),
        "zip-absolute": (
            "m.zip",
            zip_bytes([("/tmp/abs-escaped.txt", b"x")]),
            "/tmp/abs-escaped.txt",
        ),
        "zip-backslash": ("m.zip", zip_bytes([("..\\escaped.txt", b"x")]), "..\\escaped.txt"),
        "zip-symlink-out": ("m.zip", zip_bytes([_zip_symlink("link", "../../outside")]), "link"),
    }
