"""gs:// via google-cloud-storage (honours GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST).

Same single-object/prefix rule as S3. Small blobs are fetched whole and checksummed by the
library (crc32c/md5); large ones in ranged parts on one bounded thread pool, then checked
against the blob's crc32c here. Falls back to an anonymous client when no credentials exist,
as KServe does.
"""

from __future__ import annotations

import base64
import posixpath
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
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
from modelport.storage.job import Job
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
        return IntegrityError(uri, f"{what}: checksum mismatch")
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


def fetch(job: Job) -> list[str]:
    """Download the blob or prefix into ``job.payload``; return relative paths written."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket_name, key = job.bucket_and_key()
    t = job.transfer
    timeout = (t.connect_timeout, t.read_timeout)
    retry = DEFAULT_RETRY.with_timeout(max(30.0, t.read_timeout * (t.retries + 1)))
    try:
        client = _client()
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

    progress = job.progress
    progress.expect(sum(int(b.size or 0) for b, _ in blobs), len(blobs))
    paths = {rel: job.target(rel) for _, rel in blobs}
    parted: list[tuple[Any, Path]] = []

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

    tasks: list[tuple[Any, ...]] = []
    for blob, rel in blobs:
        path, size = paths[rel], int(blob.size or 0)
        if size > 2 * t.part_size:
            with path.open("wb") as f:
                f.truncate(size)
            parted.append((blob, path))
            for start in range(0, size, t.part_size):
                tasks.append((part, blob, path, start, min(start + t.part_size, size) - 1))
        else:
            tasks.append((whole, blob, path))
    with ThreadPoolExecutor(max_workers=t.concurrency) as pool:
        futures = {pool.submit(fn, *args): args[0] for fn, *args in tasks}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in done:
            failure = fut.exception()
            if failure is not None:
                progress.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise map_error(job.uri, failure, f"gs://{bucket_name}/{futures[fut].name}")
    for blob, rel in blobs:
        got, size = paths[rel].stat().st_size, int(blob.size or 0)
        if got != size:
            raise IntegrityError(job.uri, f"{blob.name}: got {got} bytes, GCS announced {size}")
    for blob, path in parted:
        progress.file_done()
        if t.verify_checksum and blob.crc32c and _crc32c(path) != blob.crc32c:
            raise IntegrityError(job.uri, f"{blob.name}: crc32c does not match")
    return [rel for _, rel in blobs]
