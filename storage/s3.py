"""s3:// via boto3 + s3transfer: one bounded pool for objects and their ranged parts.

A key equal to the URI path is fetched with HEAD + GET only (no ListBucket permission needed);
otherwise the path is a folder prefix matched at a ``/`` boundary, so ``models/iris`` never pulls
``models/iris-v2/``. Sizes are always checked; a plain-MD5 ETag is checked against the file.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.storage.config import S3Settings, Transfer
from modelport.storage.errors import (
    AuthError,
    DownloadTimeoutError,
    IntegrityError,
    NotFoundError,
    StorageError,
    TLSError,
)
from modelport.storage.job import Job

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


def _md5_ok(path: Path, etag: str) -> bool:
    match = _MD5_ETAG.match(etag)
    if not match:
        return True  # multipart or SSE ETag: not an MD5, nothing to compare
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest() == match.group(1).lower()


def fetch(job: Job) -> list[str]:
    """Download the object or prefix into ``job.payload``; return relative paths written."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    bucket, key = job.bucket_and_key()
    t = job.transfer
    client = make_client(S3Settings.from_env(), t)
    try:
        objs, _single = _list(job, client, bucket, key)
    except StorageError:
        raise
    except Exception as exc:
        raise map_error(job.uri, exc, f"{bucket}/{key}") from None

    progress = job.progress
    progress.expect(sum(o.size for o in objs), len(objs))

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
            progress.file_done()

    config = TransferConfig(
        multipart_threshold=t.part_size,
        multipart_chunksize=t.part_size,
        max_concurrency=t.concurrency,
        num_download_attempts=t.retries + 1,
        use_threads=True,
    )
    paths = {o.key: job.target(o.rel) for o in objs}
    try:
        with create_transfer_manager(client, config) as manager:
            futures = [
                manager.download(bucket, o.key, str(paths[o.key]), subscribers=[_Sub(o)])
                for o in objs
            ]
            for fut, obj in zip(futures, objs, strict=True):
                try:
                    fut.result()
                except BaseException as exc:
                    progress.cancel()
                    raise map_error(job.uri, exc, f"{bucket}/{obj.key}") from None
    except StorageError:
        raise
    except Exception as exc:
        raise map_error(job.uri, exc, f"{bucket}/{key}") from None
    _verify(job, client, bucket, objs, paths)
    return [o.rel for o in objs]


def _verify(job: Job, client: Any, bucket: str, objs: list[_Obj], paths: dict[str, Path]) -> None:
    for o in objs:
        got = paths[o.key].stat().st_size
        if got != o.size:
            raise IntegrityError(job.uri, f"{o.key}: got {got} bytes, S3 announced {o.size}")
    if not job.transfer.verify_checksum:
        return
    with ThreadPoolExecutor(max_workers=min(4, job.transfer.concurrency)) as pool:
        ok = list(pool.map(lambda o: _md5_ok(paths[o.key], o.etag), objs))
    for o, good in zip(objs, ok, strict=True):
        if good:
            continue
        # SSE-KMS / SSE-C objects have an MD5-shaped ETag that is not the content's MD5.
        head = client.head_object(Bucket=bucket, Key=o.key)
        if head.get("ServerSideEncryption", "").startswith("aws:kms") or head.get(
            "SSECustomerAlgorithm"
        ):
            continue
        raise IntegrityError(job.uri, f"{o.key}: MD5 does not match the ETag {o.etag}")
