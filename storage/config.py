"""Settings read the way KServe's storage initializer reads them, plus modelport's tunables.

KServe copies ``STORAGE_CONFIG``/``STORAGE_OVERRIDE_CONFIG`` s3 keys into ``AWS_*`` environment
variables; we read the same keys with the same precedence (config over environment) but into a
value object, so a library call from a running server does not mutate ``os.environ``.

modelport's own knobs (defaults in :class:`Transfer`): ``MODELPORT_STORAGE_CONCURRENCY`` (10,
or KServe's ``S3_MAX_FILE_CONCURRENCY``), ``_PART_SIZE`` (16 MiB), ``_CONNECT_TIMEOUT`` (10 s),
``_READ_TIMEOUT`` (60 s), ``_RETRIES`` (5, also for corrupted objects), ``_DEADLINE`` (7200 s
for the whole download, enforced by a watchdog whatever the progress; 0 = none),
``_PROGRESS_INTERVAL`` (10 s), ``_MAX_REDIRECTS`` (10), ``_MAX_ARCHIVE_BYTES`` (64 GiB),
``_MAX_ARCHIVE_ENTRIES`` (100000), ``_VERIFY_CHECKSUM`` (true), ``_LOCAL_COPY`` (false),
``_LOG_LEVEL`` (INFO, CLI only); ``MODELPORT_PVC_ROOT`` (/mnt/pvc).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import dataclass, field

from modelport.storage.errors import ConfigError, register_secret

# STORAGE_CONFIG s3 key -> environment variable KServe maps it to.
_S3_CONFIG_ENV = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "region": "AWS_DEFAULT_REGION",
    "ca_bundle": "AWS_CA_BUNDLE",
    "verify_ssl": "S3_VERIFY_SSL",
    "anonymous": "awsAnonymousCredential",
}


def _truthy(value: object, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("0", "false", "no", "off")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ConfigError(name, f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        # float() takes "inf"/"nan": int() of them raised a raw error, and a NaN deadline
        # compared as no deadline at all.
        raise ConfigError(name, f"{name} must be a finite number, got {raw!r}")
    return value


def _env_int(name: str, default: int) -> int:
    return int(_env_float(name, default))


def storage_config() -> dict[str, object]:
    """STORAGE_CONFIG merged with STORAGE_OVERRIDE_CONFIG (override wins key by key)."""
    merged: dict[str, object] = {}
    for name in ("STORAGE_CONFIG", "STORAGE_OVERRIDE_CONFIG"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            # Never echo the raw text: it holds secrets.
            raise ConfigError(name, f"{name} is not valid JSON (line {exc.lineno})") from None
        if not isinstance(value, dict):
            raise ConfigError(name, f"{name} must be a JSON object")
        merged.update(value)
    for key in ("secret_access_key", "access_key_id"):
        register_secret(merged.get(key))
    return merged


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to build a boto3 client; ``repr`` hides the keys."""

    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    verify: bool | str = True
    anonymous: bool = False
    virtual_addressing: bool = False
    accelerate: bool = False

    @classmethod
    def from_env(cls) -> S3Settings:
        """Environment first, then STORAGE_CONFIG (type s3) on top, as KServe does."""
        values = {env: os.environ.get(env) for env in _S3_CONFIG_ENV.values()}
        cfg = storage_config()
        if str(cfg.get("type", "")).lower() == "s3":
            for key, env in _S3_CONFIG_ENV.items():
                if key in cfg and cfg[key] is not None:
                    values[env] = cfg[key]  # type: ignore[assignment]
        verify: bool | str = _truthy(values["S3_VERIFY_SSL"], default=True)
        ca_bundle = values["AWS_CA_BUNDLE"] or (
            os.path.join(os.environ.get("CA_BUNDLE_VOLUME_MOUNT_POINT", ""), "cabundle.crt")
            if os.environ.get("CA_BUNDLE_CONFIGMAP_NAME")
            else None
        )
        if verify and ca_bundle:
            if not os.path.exists(str(ca_bundle)):
                raise ConfigError("s3://", f"CA bundle file {ca_bundle} does not exist")
            verify = str(ca_bundle)
        return cls(
            endpoint_url=str(values["AWS_ENDPOINT_URL"]) if values["AWS_ENDPOINT_URL"] else None,
            access_key_id=_opt_str(values["AWS_ACCESS_KEY_ID"]),
            secret_access_key=_opt_str(values["AWS_SECRET_ACCESS_KEY"]),
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
            region=_opt_str(values["AWS_DEFAULT_REGION"]),
            verify=verify,
            anonymous=_truthy(values["awsAnonymousCredential"]),
            virtual_addressing=_truthy(os.environ.get("S3_USER_VIRTUAL_BUCKET")),
            accelerate=_truthy(os.environ.get("S3_USE_ACCELERATE")),
        )


def _opt_str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Transfer:
    """Speed and safety knobs (``MODELPORT_STORAGE_*`` environment variables)."""

    concurrency: int = 10
    part_size: int = 16 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    deadline: float = 7200.0
    progress_interval: float = 10.0
    max_redirects: int = 10
    max_archive_bytes: int = 64 * 1024**3
    max_archive_entries: int = 100_000
    verify_checksum: bool = True

    @classmethod
    def from_env(cls) -> Transfer:
        p = "MODELPORT_STORAGE_"
        d = cls()
        # KServe's own knob for per-file parallelism is honoured as the default.
        conc = _env_int("S3_MAX_FILE_CONCURRENCY", d.concurrency)
        return cls(
            concurrency=max(1, _env_int(p + "CONCURRENCY", conc)),
            part_size=max(5 * 1024 * 1024, _env_int(p + "PART_SIZE", d.part_size)),
            connect_timeout=_env_float(p + "CONNECT_TIMEOUT", d.connect_timeout),
            read_timeout=_env_float(p + "READ_TIMEOUT", d.read_timeout),
            retries=max(0, _env_int(p + "RETRIES", d.retries)),
            deadline=_env_float(p + "DEADLINE", d.deadline),
            progress_interval=_env_float(p + "PROGRESS_INTERVAL", d.progress_interval),
            max_redirects=_env_int(p + "MAX_REDIRECTS", d.max_redirects),
            max_archive_bytes=_env_int(p + "MAX_ARCHIVE_BYTES", d.max_archive_bytes),
            max_archive_entries=_env_int(p + "MAX_ARCHIVE_ENTRIES", d.max_archive_entries),
            verify_checksum=_truthy(os.environ.get(p + "VERIFY_CHECKSUM"), default=True),
        )


def _parse_patterns(raw: str | None) -> list[str]:
    """KServe accepts a JSON list or a comma-separated string; a trailing ``/`` means a folder."""
    if not raw or not raw.strip():
        return []
    raw = raw.strip()
    items: list[str]
    if raw.startswith("["):
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError("STORAGE_*_PATTERNS", f"invalid JSON list: {raw!r}") from exc
        items = [str(x) for x in loaded]
    else:
        items = raw.split(",")
    return [p.strip() + ("*" if p.strip().endswith("/") else "") for p in items if p.strip()]


@dataclass(frozen=True)
class Patterns:
    """STORAGE_ALLOW_PATTERNS / STORAGE_IGNORE_PATTERNS applied to paths relative to DEST."""

    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Patterns:
        return cls(
            tuple(_parse_patterns(os.environ.get("STORAGE_ALLOW_PATTERNS"))),
            tuple(_parse_patterns(os.environ.get("STORAGE_IGNORE_PATTERNS"))),
        )

    def __bool__(self) -> bool:
        return bool(self.allow or self.ignore)

    def wants(self, relpath: str) -> bool:
        """True if ``relpath`` (``/``-separated) should be kept (fnmatch, like huggingface_hub)."""
        if self.allow and not any(fnmatch.fnmatchcase(relpath, p) for p in self.allow):
            return False
        return not any(fnmatch.fnmatchcase(relpath, p) for p in self.ignore)


def http_headers(hostname: str) -> dict[str, str]:
    """Per-host headers from env ``<hostname>-headers`` (JSON object), as KServe reads them."""
    raw = os.environ.get(f"{hostname}-headers", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(hostname, f"{hostname}-headers is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(hostname, f"{hostname}-headers must be a JSON object")
    headers = {str(k): str(v) for k, v in value.items()}
    for v in headers.values():
        register_secret(v)
    return headers
