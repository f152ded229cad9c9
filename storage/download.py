"""``download(uri, dest)``: fetch a storageUri into a local model directory, atomically.

Atomicity: in Kubernetes DEST (``/mnt/models``) is a mount point, so it cannot be replaced by a
rename and its parent may be another filesystem. We therefore stage in a hidden directory
*inside* DEST (``DEST/.modelport-download-<pid>-XXXX``, same filesystem), verify there, then
move each top-level entry into DEST with ``os.replace``; if one of those renames fails, the ones
done are undone, so DEST is left exactly as it was. Any failure (or SIGTERM in the CLI)
removes the staging directory, so DEST never holds partial files; stale staging directories of
dead processes are removed on the next run. Running twice yields the same DEST.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelport.storage import gcs, http, local, s3
from modelport.storage.archive import archive_suffix, extract
from modelport.storage.config import Patterns, Transfer
from modelport.storage.errors import (
    CancelledError,
    ConfigError,
    NotFoundError,
    StorageError,
    UnsupportedSchemeError,
)
from modelport.storage.job import Job
from modelport.storage.progress import Progress

log = logging.getLogger("modelport.storage")

MODEL_MOUNT_DIR = "/mnt/models"
SUPPORTED = ("s3://", "gs://", "http://", "https://", "file://", "pvc://", "a local path")
_STAGE_PREFIX = ".modelport-download-"
_active: set[str] = set()
_active_lock = threading.RLock()  # reentrant: the CLI's signal handler reads it too
_running: set[Progress] = set()  # downloads in flight, for cancel_all()
_publishing: dict[str, int] = {}  # stage -> thread moving it into DEST: not to be interrupted

_BACKENDS = {"s3": s3.fetch, "gs": gcs.fetch, "http": http.fetch, "https": http.fetch}


def _backend(uri: str) -> Callable[[Job], list[str]]:
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return local.fetch
    scheme = scheme.lower()
    if scheme in ("file", "pvc"):
        return local.fetch
    if scheme in _BACKENDS:
        return _BACKENDS[scheme]
    raise UnsupportedSchemeError(
        uri, f"unsupported storage scheme {scheme + '://'!r}; supported: {', '.join(SUPPORTED)}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(dest: Path) -> None:
    """Remove staging dirs left by a killed run (dead pid, or ours but not in use)."""
    for entry in dest.glob(_STAGE_PREFIX + "*"):
        m = re.match(re.escape(_STAGE_PREFIX) + r"(\d+)-", entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        with _active_lock:
            in_use = str(entry) in _active
        if not in_use and (pid == os.getpid() or not _pid_alive(pid)):
            shutil.rmtree(entry, ignore_errors=True)


class _PublishError(Exception):
    """Moving the payload into DEST failed; DEST was put back as it was."""

    def __init__(self, name: str, reason: str, restored: bool) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason
        self.restored = restored


@dataclass
class _Moved:
    """What publishing did for one top-level entry, so it can be undone in reverse."""

    name: str
    old_set_aside: bool = False  # DEST/name was moved to stage/replaced/name
    new_placed: bool = False  # payload/name was moved to DEST/name


def _publish(payload: Path, dest: Path, stage: Path) -> None:
    """Move every top-level entry of ``payload`` into ``dest`` (same filesystem renames).

    All or nothing: if any rename fails, the entries already moved are moved back, in reverse
    order, so DEST is exactly as it was (never half old model, half new).
    """
    old = stage / "replaced"
    old.mkdir()
    moved: list[_Moved] = []
    try:
        for entry in sorted(payload.iterdir()):
            step = _Moved(entry.name)
            moved.append(step)
            target = dest / entry.name
            if os.path.lexists(target):
                # os.replace cannot put a dir over a non-empty dir or a file (and vice versa).
                os.rename(target, old / entry.name)
                step.old_set_aside = True
            os.replace(entry, target)
            step.new_placed = True
    except BaseException as exc:
        restored = _unpublish(moved, payload, dest, old)
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__  # exc.filename is a staging path
            raise _PublishError(moved[-1].name, reason, restored) from None
        raise


def _unpublish(moved: list[_Moved], payload: Path, dest: Path, old: Path) -> bool:
    """Undo ``moved`` (newest first); True if every step was undone."""
    ok = True
    for step in reversed(moved):
        try:
            if step.new_placed:
                os.replace(dest / step.name, payload / step.name)
            if step.old_set_aside:
                os.rename(old / step.name, dest / step.name)
        except OSError:
            # Renames that just succeeded the other way rarely fail; keep undoing the rest.
            log.exception("cannot restore %s in %s", step.name, dest)
            ok = False
    return ok


def _extract_lone(rel: str, stage: Path, payload: Path, job: Job) -> None:
    """Extract the only file fetched, an archive, at the top of the payload (as KServe does,
    even when it sat in a subfolder of the prefix, e.g. ``v1/model.zip``); the folders that
    held it are removed once empty, so DEST gets no empty ``v1/``."""
    archive = stage / "archive" / Path(rel).name
    archive.parent.mkdir()
    os.replace(payload / rel, archive)
    for folder in Path(rel).parents[:-1]:  # innermost first, payload itself excluded
        (payload / folder).rmdir()
    log.info("extracting %s", rel)
    extract(archive, payload, job.uri, job.transfer, job.patterns)


def cancel_all(why: str) -> None:
    """Cancel every download in flight (the CLI's SIGTERM handler): each stops promptly,
    removes its staging directory and raises :class:`CancelledError`; DEST stays as it was.
    """
    with _active_lock:
        running = list(_running)
    for progress in running:
        progress.cancel(CancelledError(progress.uri, why))


def publishing(thread: int) -> bool:
    """Whether ``thread`` is moving a finished download into DEST: a few renames that must not
    be cut in half (the CLI defers a signal that arrives then)."""
    with _active_lock:
        return thread in _publishing.values()


def remove_staging() -> None:
    """Remove the staging directory of every download still in flight (the CLI, exiting on a
    signal, does not wait for a thread stuck in a read to clean up); one being published into
    DEST is left to finish."""
    with _active_lock:
        stages = [stage for stage in _active if stage not in _publishing]
    for stage in stages:
        shutil.rmtree(stage, ignore_errors=True)


def download(uri: str, dest: str | os.PathLike[str]) -> Path:
    """Download ``uri`` into the directory ``dest`` and return it (as a Path).

    ``dest`` is created if missing. Single archives (.zip, .tar, .tar.gz, .tgz) are extracted
    into ``dest``. Raises :class:`~modelport.storage.errors.StorageError` (one-line, secret-free
    message) on any failure, leaving no partial file in ``dest``.
    """
    try:
        return _download(uri, Path(dest))
    except StorageError as exc:
        if exc.uri == uri:
            raise
        # A setting's error (MODELPORT_STORAGE_*, STORAGE_CONFIG, a CA bundle) knows the
        # setting, not the download: the line must still say which URI failed.
        raise type(exc)(uri, exc.cause) from None
    except OSError as exc:
        # DEST under a file, read-only or full (while a body is written or an archive
        # extracted): one line naming DEST, not a raw OSError naming a staging path (which a
        # server's --model_dir, catching StorageError only, printed as a traceback).
        reason = exc.strerror or type(exc).__name__
        where = str(exc.filename or "")
        if not where or where.startswith(str(dest)):
            raise StorageError(uri, f"cannot write to {dest}: {reason}") from None
        raise StorageError(uri, f"{reason}: {where}") from None


def _download(uri: str, dest_path: Path) -> Path:
    """:func:`download`, whose errors may still name a setting instead of ``uri``."""
    if not uri.strip():
        raise ConfigError(uri, "empty storage URI")
    if dest_path.exists() and not dest_path.is_dir():
        raise ConfigError(uri, f"destination {dest_path} exists and is not a directory")
    if uri.rstrip("/") == MODEL_MOUNT_DIR or uri.startswith(MODEL_MOUNT_DIR + "/"):
        log.info("%s is already mounted: nothing to download", uri)
        return dest_path  # multi-model serving: the agent fills /mnt/models itself
    fetch = _backend(uri)
    if fetch is local.fetch and local.is_destination(uri, dest_path):
        log.info("%s is the destination itself: nothing to download", uri)
        return dest_path
    transfer = Transfer.from_env()
    patterns = Patterns.from_env()
    created = not dest_path.exists()
    dest_path.mkdir(parents=True, exist_ok=True)
    _clean_stale(dest_path)
    stage = Path(tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-", dir=dest_path))
    progress = Progress(uri, transfer.progress_interval, transfer.deadline)
    with _active_lock:
        _active.add(str(stage))
        _running.add(progress)
    payload = stage / "payload"
    try:
        payload.mkdir()
        log.info("downloading %s to %s", uri, dest_path)
        job = Job(uri, payload, transfer, patterns, progress, dest=dest_path)
        files = fetch(job)
        if len(files) == 1 and (archive_suffix(files[0]) or files[0] in job.archive_hints):
            _extract_lone(files[0], stage, payload, job)
        if not any(payload.iterdir()):
            raise NotFoundError(uri, "nothing to download")
        with _active_lock:
            _publishing[str(stage)] = threading.get_ident()
        try:
            _publish(payload, dest_path, stage)
        except _PublishError as exc:
            state = "left as it was" if exc.restored else "NOT fully restored (see the log)"
            raise StorageError(
                uri, f"cannot move {exc.name!r} into {dest_path}: {exc.reason}; {state}"
            ) from None
        finally:
            with _active_lock:
                _publishing.pop(str(stage), None)
    except BaseException:
        progress.cancel()
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                dest_path.rmdir()  # only if empty: never remove what was there
        raise
    finally:
        progress.close()
        shutil.rmtree(stage, ignore_errors=True)
        with _active_lock:
            _active.discard(str(stage))
            _running.discard(progress)
    log.info("%s", progress.summary())
    return dest_path


__all__ = ["StorageError", "cancel_all", "download", "publishing", "remove_staging"]
