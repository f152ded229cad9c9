"""gs:// via google-cloud-storage (honours GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST).

Same single-object/prefix rule as S3. Small blobs are fetched whole and checksummed by the
library (crc32c/md5); large ones in ranged parts on one bounded thread pool, then checked
against the blob's crc32c here; a corrupted blob is fetched again (:meth:`Job.fetch_intact`).
The deadline (or a signal) shuts the sockets being read down, so a stalled read stops at once. Falls back to an anonymous client when no credentials exist,
as KServe does.
"""

from __future__ import annotations

import base64
import posixpath
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO, Any

from modelport.storage.errors import (
    AuthError,
    DownloadTimeoutError,
    IntegrityError,
    NotFoundError,
    StorageError,
    TLSError,
)
from modelport.storage.job import Damage, Job
from modelport.storage.progress import Progress


class _Counting:
    """A write-only file wrapper that reports bytes to :class:`Progress` (and its deadline)."""

    def __init__(self, f: IO[bytes], progress: Progress) -> None:
        self.f = f
        self.progress = progress

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.progress.add(len(data))
        return n

    def flush(self) -> None:
        self.f.flush()

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)


def _client() -> Any:
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


def map_error(uri: str, exc: BaseException, what: str) -> StorageError:
    """Translate google-cloud/requests exceptions into one-line errors."""
    import requests
    from google.api_core import exceptions as gex
    from google.auth import exceptions as aex

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, gex.NotFound):
        return NotFoundError(uri, f"{what} not found (HTTP 404)")
    if isinstance(exc, gex.Forbidden | gex.Unauthorized | aex.DefaultCredentialsError):
        return AuthError(uri, f"access to {what} denied ({type(exc).__name__})")
    if isinstance(exc, aex.RefreshError):
        return AuthError(uri, "could not obtain a Google access token")
    if isinstance(exc, requests.exceptions.SSLError):
        return TLSError(uri, "TLS verification failed for the GCS endpoint")
    if isinstance(exc, requests.exceptions.Timeout | gex.RetryError | TimeoutError):
        return DownloadTimeoutError(uri, f"timed out talking to GCS ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return StorageError(uri, "cannot connect to the GCS endpoint")
    if type(exc).__name__ == "DataCorruption":
        return IntegrityError(
            uri, f"{what}: checksum mismatch: the bytes received do not match its crc32c/MD5"
        )
    if isinstance(exc, gex.GoogleAPICallError):
        return StorageError(uri, f"GCS error {exc.code} on {what}")
    return StorageError(uri, f"{type(exc).__name__}: {exc}")


def _crc32c(path: Path) -> str:
    import google_crc32c

    c = google_crc32c.Checksum()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            c.update(chunk)
    return base64.b64encode(c.digest()).decode()


def _abort_on_cancel(client: Any, progress: Progress) -> None:
    """At the deadline (or a signal) shut down the sockets of the responses being read, so a
    stalled read returns now instead of after the read timeout; refuse responses after that
    (the library's retry of the cut read)."""
    session = getattr(client, "_http", None)  # the client's requests.Session
    hooks = getattr(session, "hooks", None)
    if not isinstance(hooks, dict):
        return

    def track(response: Any, *args: Any, **kwargs: Any) -> Any:
        progress.check_deadline()  # raises the reason once cancelled: not retryable
        shutdown = getattr(getattr(response, "raw", None), "shutdown", None)
        if shutdown is not None:  # urllib3 >= 2.3
            progress.on_cancel(shutdown)
        return response

    hooks.setdefault("response", []).append(track)


def fetch(job: Job) -> list[str]:
    """Download the blob or prefix into ``job.payload``; return relative paths written."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket_name, key = job.bucket_and_key()
    t = job.transfer
    timeout = (t.connect_timeout, t.read_timeout)
    retry = DEFAULT_RETRY.with_timeout(max(30.0, t.read_timeout * (t.retries + 1)))
    try:
        client = _client()
        _abort_on_cancel(client, job.progress)
        bucket = client.bucket(bucket_name)
        blobs: list[tuple[Any, str]] = []
        single = None
        if key and not key.endswith("/"):
            single = bucket.get_blob(key, timeout=timeout, retry=retry)  # no list permission
        if single is not None:
            rel = posixpath.basename(key)
            blobs = [(single, rel)] if job.keep(rel, single=True) else []
            if not blobs:
                raise job.nothing_found(job.uri, 1)
        else:
            prefix = key.rstrip("/") + "/" if key else ""
            listed = 0
            for blob in client.list_blobs(bucket, prefix=prefix, timeout=timeout, retry=retry):
                job.progress.check_deadline()
                if blob.name.endswith("/"):
                    continue
                listed += 1
                rel = blob.name[len(prefix) :]
                if job.keep(rel, single=False):
                    blobs.append((blob, rel))
            if not blobs:
                raise job.nothing_found(f"gs://{bucket_name}/{prefix}", listed)
    except StorageError:
        raise
    except Exception as exc:
        raise map_error(job.uri, exc, f"gs://{bucket_name}/{key}") from None

    job.progress.expect(sum(int(b.size or 0) for b, _ in blobs), len(blobs))
    paths = {rel: job.target(rel, blob.name) for blob, rel in blobs}
    by_rel = {rel: blob for blob, rel in blobs}

    def fetch_some(rels: list[str]) -> dict[str, Damage]:
        todo = [(by_rel[rel], rel) for rel in rels]
        return _download(job, todo, paths, (timeout, retry))

    job.fetch_intact(list(by_rel), fetch_some)
    return [rel for _, rel in blobs]


def _download(
    job: Job,
    blobs: list[tuple[Any, str]],
    paths: dict[str, Path],
    call: tuple[tuple[float, float], Any],
) -> dict[str, Damage]:
    """Download ``blobs`` on one bounded pool; return the corrupted ones, raise on any other
    failure (after cancelling the rest)."""
    progress, t = job.progress, job.transfer
    timeout, retry = call
    parted: list[tuple[Any, str]] = []  # (blob, rel) fetched in ranged parts

    def whole(blob: Any, path: Path) -> None:
        with path.open("wb") as f:
            blob.download_to_file(_Counting(f, progress), timeout=timeout, retry=retry)
        progress.file_done()

    def part(blob: Any, path: Path, start: int, end: int) -> None:
        with path.open("r+b") as f:
            f.seek(start)
            blob.download_to_file(
                _Counting(f, progress),
                start=start,
                end=end,
                checksum=None,
                timeout=timeout,
                retry=retry,
            )

    tasks: list[tuple[Any, str, Any, tuple[Any, ...]]] = []
    for blob, rel in blobs:
        path, size = paths[rel], int(blob.size or 0)
        if size > 2 * t.part_size:
            with path.open("wb") as f:
                f.truncate(size)
            parted.append((blob, rel))
            for start in range(0, size, t.part_size):
                end = min(start + t.part_size, size) - 1
                tasks.append((blob, rel, part, (blob, path, start, end)))
        else:
            tasks.append((blob, rel, whole, (blob, path)))
    damaged: dict[str, Damage] = {}
    with ThreadPoolExecutor(max_workers=t.concurrency) as pool:
        futures = {pool.submit(fn, *args): (blob, rel) for blob, rel, fn, args in tasks}
        for fut in as_completed(futures):
            failure = fut.exception()
            if failure is None:
                continue
            blob, rel = futures[fut]
            progress.check_deadline()  # a read cut short by the deadline reports the deadline
            error = map_error(job.uri, failure, blob.name)
            if isinstance(error, IntegrityError):  # the library's crc32c/MD5 check
                damaged[rel] = Damage(error, paths[rel], int(blob.size or 0), 0)
                continue
            progress.cancel(error)
            pool.shutdown(wait=True, cancel_futures=True)
            raise error
    for blob, rel in blobs:
        got, size = paths[rel].stat().st_size, int(blob.size or 0)
        if rel not in damaged and got != size:
            cause = f"{blob.name}: got {got} bytes, GCS announced {size}"
            done = 0 if any(r == rel for _, r in parted) else 1
            damaged[rel] = Damage(IntegrityError(job.uri, cause), paths[rel], got, done)
    for blob, rel in parted:
        if rel in damaged:
            continue
        progress.file_done()
        if t.verify_checksum and blob.crc32c and (crc := _crc32c(paths[rel])) != blob.crc32c:
            cause = (
                f"{blob.name}: checksum mismatch: the bytes received have crc32c {crc}, "
                f"GCS says {blob.crc32c}"
            )
            damaged[rel] = Damage(IntegrityError(job.uri, cause), paths[rel], int(blob.size), 1)
    return damaged
