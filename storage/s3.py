"""s3:// via boto3 + s3transfer: one bounded pool for objects and their ranged parts.

A key equal to the URI path is fetched with HEAD + GET only (no ListBucket permission needed);
otherwise the path is a folder prefix matched at a ``/`` boundary, so ``models/iris`` never pulls
``models/iris-v2/``. Sizes are always checked; a plain-MD5 ETag is checked against the file, and
botocore checks the flexible checksum (CRC32...) S3 stored with the object; a corrupted object is
fetched again. The deadline and signals stop transfers at once (see :class:`_Aborter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import socket
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.storage.config import S3Settings, Transfer
from modelport.storage.errors import (
    AuthError,
    ConfigError,
    DownloadTimeoutError,
    IntegrityError,
    NotFoundError,
    StorageError,
    TLSError,
)
from modelport.storage.job import Damage, Job
from modelport.storage.progress import Progress

_SHUTDOWN_GRACE_S = 1.5

_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "403",
    "401",
}


@dataclass(frozen=True)
class _Obj:
    key: str
    rel: str
    size: int
    etag: str


def make_client(settings: S3Settings, transfer: Transfer) -> Any:
    """A boto3 S3 client with timeouts, standard-mode retries (backoff) and a big enough pool."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    s3_opts: dict[str, object] = {}
    legacy = settings.endpoint_url == "https://s3.amazonaws.com"
    if settings.virtual_addressing or (legacy and settings.region not in (None, "us-east-1")):
        s3_opts["addressing_style"] = "virtual"
    if settings.accelerate:
        s3_opts["use_accelerate_endpoint"] = True
    config = Config(
        connect_timeout=transfer.connect_timeout,
        read_timeout=transfer.read_timeout,
        retries={"max_attempts": transfer.retries + 1, "mode": "standard"},
        max_pool_connections=transfer.concurrency + 4,
        s3=s3_opts or None,
        signature_version=UNSIGNED if settings.anonymous else None,
    )
    session = boto3.session.Session(
        aws_access_key_id=None if settings.anonymous else settings.access_key_id,
        aws_secret_access_key=None if settings.anonymous else settings.secret_access_key,
        aws_session_token=None if settings.anonymous else settings.session_token,
        region_name=settings.region,
    )
    return session.client(
        "s3", endpoint_url=settings.endpoint_url, verify=settings.verify, config=config
    )


def map_error(uri: str, exc: BaseException, what: str) -> StorageError:
    """Translate a botocore/s3transfer exception into a one-line, secret-free error."""
    from botocore import exceptions as bex

    if isinstance(exc, StorageError):
        return exc
    last = getattr(exc, "last_exception", None)  # s3transfer RetriesExceededError
    if isinstance(last, BaseException):
        return map_error(uri, last, what)
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return NotFoundError(uri, f"bucket {what.split('/')[0]!r} does not exist")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return NotFoundError(uri, f"{what} not found (HTTP 404)")
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(uri, f"access to {what} denied ({code or status})")
        return StorageError(uri, f"S3 error {code or status} on {what}")
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AuthError(
            uri,
            "no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "STORAGE_CONFIG, or awsAnonymousCredential=true)",
        )
    if isinstance(exc, bex.FlexibleChecksumError):
        return IntegrityError(uri, f"{what}: checksum mismatch: {exc}")
    if isinstance(exc, bex.SSLError):
        return TLSError(uri, f"TLS verification failed for the S3 endpoint: {exc}")
    if isinstance(exc, bex.ConnectTimeoutError | bex.ReadTimeoutError):
        return DownloadTimeoutError(uri, f"timed out talking to S3 ({type(exc).__name__})")
    if isinstance(exc, bex.EndpointConnectionError):
        return StorageError(uri, f"cannot connect to S3 endpoint: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        return StorageError(uri, f"S3 client error: {exc}")
    return StorageError(uri, f"{type(exc).__name__}: {exc}")


def _list(job: Job, client: Any, bucket: str, key: str) -> tuple[list[_Obj], bool]:
    """Objects to fetch and whether the URI named a single object."""
    from botocore.exceptions import ClientError

    head_denied = None
    if key and not key.endswith("/"):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
            rel = posixpath.basename(key)
            obj = _Obj(key, rel, int(head["ContentLength"]), str(head.get("ETag", "")))
            return ([obj] if job.keep(rel, single=True) else []), True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                head_denied = exc  # missing key without ListBucket also reads as 403
            elif status != 404:
                raise map_error(job.uri, exc, f"{bucket}/{key}") from None
    prefix = key.rstrip("/") + "/" if key else ""
    objs: list[_Obj] = []
    listed = 0
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            job.progress.check_deadline()
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue  # folder marker
                listed += 1
                rel = item["Key"][len(prefix) :]
                if job.keep(rel, single=False):
                    objs.append(_Obj(item["Key"], rel, int(item["Size"]), item.get("ETag", "")))
    except ClientError as exc:
        raise map_error(job.uri, head_denied or exc, f"{bucket}/{prefix}") from None
    if not objs:
        raise job.nothing_found(f"s3://{bucket}/{prefix}", listed)
    return objs, False


def _md5_mismatch(path: Path, etag: str) -> str | None:
    """The file's MD5 if the ETag is a plain MD5 and differs from it, else None."""
    match = _MD5_ETAG.match(etag)
    if not match:
        return None  # multipart or SSE ETag: not an MD5, nothing to compare
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    return None if hexdigest == match.group(1).lower() else hexdigest


class _Aborter:
    """Lets the watchdog or a signal stop this client's transfers now, not at the read timeout.

    s3transfer reads each part in 256 KiB blocks on its own threads, so a trickle or a stall
    blocks a thread far longer than the deadline allows. On cancellation every response still
    being read has its socket shut down (the blocked read returns at once) and every new request
    (s3transfer's retry of that read) is refused with the cancellation's reason.
    """

    def __init__(self, client: Any, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._bodies: weakref.WeakSet[Any] = weakref.WeakSet()
        client.meta.events.register("before-send.s3", self._refuse)
        client.meta.events.register("after-call.s3.GetObject", self._track)
        progress.on_cancel(self._abort)

    def _refuse(self, **kwargs: Any) -> None:
        self._progress.check_deadline()  # raises the reason once cancelled

    def _track(self, http_response: Any = None, **kwargs: Any) -> None:
        raw = getattr(http_response, "raw", None)
        if raw is None:
            return
        with self._lock:
            self._bodies.add(raw)
        if self._progress.cancelled:
            self._abort()  # the response arrived just after the cancellation

    def _abort(self) -> None:
        with self._lock:
            bodies = list(self._bodies)
        for raw in bodies:
            with contextlib.suppress(Exception):  # already read and back in the pool, or closed
                if hasattr(raw, "shutdown"):
                    raw.shutdown()  # urllib3 >= 2.3: made for unblocking a read elsewhere
                else:
                    raw.connection.sock.shutdown(socket.SHUT_RDWR)


def fetch(job: Job) -> list[str]:
    """Download the object or prefix into ``job.payload``; return relative paths written.

    A corrupted object (botocore's flexible checksum or the MD5 ETag disagrees with the bytes) is
    fetched again like a transient fault, up to ``MODELPORT_STORAGE_RETRIES`` times with backoff,
    and reported as an :class:`IntegrityError` only when every attempt was corrupted.
    """
    bucket, key = job.bucket_and_key()
    t = job.transfer
    settings = S3Settings.from_env()
    try:
        client = make_client(settings, t)
    except ValueError as exc:  # botocore's check of the endpoint: a setting, not a fault
        raise ConfigError(
            job.uri,
            f"AWS_ENDPOINT_URL {settings.endpoint_url!r} is not a valid URL ({exc}); "
            "expected http(s)://host[:port]",
        ) from None
    _Aborter(client, job.progress)
    try:
        objs, _single = _list(job, client, bucket, key)
    except StorageError:
        raise
    except Exception as exc:
        raise map_error(job.uri, exc, f"{bucket}/{key}") from None
    job.progress.expect(sum(o.size for o in objs), len(objs))
    paths = {o.key: job.target(o.rel, o.key) for o in objs}

    def fetch_some(todo: list[_Obj]) -> dict[_Obj, Damage]:
        damaged = _transfer(job, client, bucket, todo, paths)
        return damaged | _verify(job, client, bucket, todo, damaged, paths)

    job.fetch_intact(objs, fetch_some)
    return [o.rel for o in objs]


def _transfer(
    job: Job, client: Any, bucket: str, objs: list[_Obj], paths: dict[str, Path]
) -> dict[_Obj, Damage]:
    """Download ``objs`` on one transfer manager; return the corrupted ones, raise on any other
    failure (after stopping every other transfer)."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    progress = job.progress
    wake = threading.Event()  # a transfer finished, or the download was cancelled
    progress.on_cancel(wake.set)

    class _Sub(BaseSubscriber):
        def __init__(self, obj: _Obj) -> None:
            self.obj = obj

        def on_queued(self, future: Any, **kwargs: Any) -> None:
            # Known from LIST/HEAD: saves s3transfer one HEAD per object.
            future.meta.provide_transfer_size(self.obj.size)
            if self.obj.etag and hasattr(future.meta, "provide_object_etag"):
                future.meta.provide_object_etag(self.obj.etag)

        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress.add(bytes_transferred)

        def on_done(self, future: Any, **kwargs: Any) -> None:
            try:
                future.result()
                progress.file_done()
            except BaseException:  # the waiting thread reports it
                pass
            wake.set()

    t = job.transfer
    config = TransferConfig(
        multipart_threshold=t.part_size,
        multipart_chunksize=t.part_size,
        max_concurrency=t.concurrency,
        num_download_attempts=t.retries + 1,
        use_threads=True,
    )
    manager = create_transfer_manager(client, config)
    futures: list[Any] = []
    ok = False
    try:
        for o in objs:
            futures.append(
                manager.download(bucket, o.key, str(paths[o.key]), subscribers=[_Sub(o)])
            )
        corrupt = _wait(job, bucket, list(zip(futures, objs, strict=True)), paths, wake)
        ok = True
        return corrupt
    except Exception as exc:
        error = map_error(job.uri, exc, f"{bucket}/{objs[0].key}")
        progress.cancel(error)
        raise error from None
    except BaseException:  # SystemExit from the CLI's signal handler: stop transfers, go on
        progress.cancel()
        raise
    finally:
        _close(manager, futures, ok)


def _wait(
    job: Job,
    bucket: str,
    pending: list[tuple[Any, _Obj]],
    paths: dict[str, Path],
    wake: threading.Event,
) -> dict[_Obj, Damage]:
    """Wait for the transfers without blocking on any one of them, so a cancellation (deadline,
    signal, another part's failure) is acted on at once."""
    corrupt: dict[_Obj, Damage] = {}
    while pending:
        wake.clear()
        job.progress.check_deadline()
        still = []
        for fut, obj in pending:
            if not fut.done():
                still.append((fut, obj))
                continue
            try:
                fut.result()
            except Exception as exc:
                job.progress.check_deadline()  # a part failed because we cancelled: say why
                error = map_error(job.uri, exc, f"{bucket}/{obj.key}")
                if not isinstance(error, IntegrityError):
                    raise error from None
                corrupt[obj] = Damage(error, paths[obj.key], obj.size, 0)
        pending = still
        if pending:
            wake.wait(1.0)
    return corrupt


def _close(manager: Any, futures: list[Any], ok: bool) -> None:
    """Shut the manager down; after a failure wait only briefly for its threads (a transfer
    stuck before its response headers holds its thread until the read timeout)."""
    if ok:
        manager.shutdown()
        return
    for fut in futures:
        fut.cancel()
    closer = threading.Thread(target=manager.shutdown, name="s3-shutdown", daemon=True)
    closer.start()
    closer.join(_SHUTDOWN_GRACE_S)


def _verify(
    job: Job,
    client: Any,
    bucket: str,
    objs: list[_Obj],
    skip: dict[_Obj, Damage],
    paths: dict[str, Path],
) -> dict[_Obj, Damage]:
    """Size and MD5-ETag check of every downloaded object; the corrupted ones are returned."""
    done = [o for o in objs if o not in skip]
    corrupt: dict[_Obj, Damage] = {}
    for o in done:
        got = paths[o.key].stat().st_size
        if got != o.size:
            cause = f"{o.key}: got {got} bytes, S3 announced {o.size}"
            corrupt[o] = Damage(IntegrityError(job.uri, cause), paths[o.key], got, 1)
    if not job.transfer.verify_checksum:
        return corrupt
    done = [o for o in done if o not in corrupt]
    with ThreadPoolExecutor(max_workers=min(4, job.transfer.concurrency)) as pool:
        digests = list(pool.map(lambda o: _md5_mismatch(paths[o.key], o.etag), done))
    for o, digest in zip(done, digests, strict=True):
        if digest is None:
            continue
        # SSE-KMS / SSE-C objects have an MD5-shaped ETag that is not the content's MD5.
        head = client.head_object(Bucket=bucket, Key=o.key)
        if head.get("ServerSideEncryption", "").startswith("aws:kms") or head.get(
            "SSECustomerAlgorithm"
        ):
            continue
        cause = f"{o.key}: checksum mismatch: the bytes received have MD5 {digest}, the ETag says {o.etag}"
        corrupt[o] = Damage(IntegrityError(job.uri, cause), paths[o.key], o.size, 1)
    return corrupt
