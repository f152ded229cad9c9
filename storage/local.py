"""Local paths, file:// and pvc:// (which KServe's webhook mounts at /mnt/pvc/<path>).

Like KServe, files are symlinked into DEST (the PVC is mounted in the server container too, so
nothing is copied); ``MODELPORT_STORAGE_LOCAL_COPY=true`` copies instead. Directories are
recreated for real so patterns can pick individual files. A ``pvc://`` path must resolve inside
the PVC mount.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modelport.storage.config import _truthy
from modelport.storage.errors import ConfigError, NotFoundError
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
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise ConfigError(uri, f"path resolves outside the PVC mount {root}")
        return path
    return Path(uri)


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
        files = [
            (Path(d, n), Path(d, n).relative_to(src).as_posix())
            for d, _, names in os.walk(src)
            for n in sorted(names)
        ]
        single = False
    listed = len(files)
    files = [(p, rel) for p, rel in files if job.keep(rel, single)]
    if not files:
        raise job.nothing_found(str(src), listed)
    for path, rel in files:
        target = job.target(rel)
        if copy:
            shutil.copy2(path, target)
            job.progress.add(target.stat().st_size)
        else:
            os.symlink(path.resolve(), target)
        job.progress.file_done()
    return [rel for _, rel in files]
