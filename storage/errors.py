"""Errors with a one-line, credential-free message, so the CLI can print one clear line.

Every failure the initializer reports is a :class:`StorageError` carrying the (redacted) URI and
a short cause; backend exceptions are translated here so callers never see a raw traceback
(which could carry signed URLs or keys).
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit


class StorageError(Exception):
    """A download failed; ``str()`` is ``"<uri>: <cause>"`` with secrets removed."""

    kind = "error"

    def __init__(self, uri: str, cause: str) -> None:
        self.uri = uri
        self.cause = cause
        super().__init__(redact(f"{display_uri(uri)}: {cause}"))


class NotFoundError(StorageError):
    """The bucket, object, prefix, file or URL does not exist (or holds nothing)."""

    kind = "not found"


class AuthError(StorageError):
    """Credentials missing or refused (401/403, bad key, no credentials found)."""

    kind = "auth failed"


class TLSError(StorageError):
    """Certificate verification or TLS handshake failed."""

    kind = "TLS"


class DownloadTimeoutError(StorageError):
    """A connect/read timeout or the overall deadline was hit."""

    kind = "timeout"


class ArchiveError(StorageError):
    """Not a valid archive, or an unsafe entry (traversal, link out, device), or a bomb."""

    kind = "archive"


class IntegrityError(StorageError):
    """Downloaded size or checksum differs from what the backend announced.

    Raised only once the retries are spent: a corrupted transfer is retried like a transient
    fault, since the stored object is usually fine and the bytes were damaged on the way.
    """

    kind = "integrity"


class CancelledError(StorageError):
    """The download was stopped from outside (SIGTERM/SIGINT in the CLI)."""

    kind = "cancelled"


class UnsupportedSchemeError(StorageError):
    """The URI scheme is not one this initializer handles."""

    kind = "unsupported scheme"


class ConfigError(StorageError):
    """STORAGE_CONFIG or another setting is malformed."""

    kind = "config"


# Environment variables whose values are secrets and must never be printed.
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_ACCESS_KEY",
)
_extra_secrets: set[str] = set()


def register_secret(value: object) -> None:
    """Remember a secret value (from STORAGE_CONFIG, headers...) so :func:`redact` hides it."""
    if isinstance(value, str) and len(value) >= 4:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """Replace every known secret value and URL userinfo/query in ``text`` by ``***``."""
    secrets = set(_extra_secrets)
    secrets.update(v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    # Signed URLs (X-Amz-Signature, SAS tokens) carry credentials in their query string.
    text = re.sub(r"(https?://)[^/\s@]+@", r"\1***@", text)  # user:password@
    return re.sub(r"(https?://[^\s?#'\"]+)\?(?!\*\*\*)[^\s'\"]*", r"\1?***", text)


def display_uri(uri: str) -> str:
    """A URI safe to print: no ``user:password@`` and no query string."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or len(parts.scheme) == 1:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class RedactFilter:
    """Logging filter: secrets and signed-URL queries never reach a log line."""

    def filter(self, record: object) -> bool:
        import logging
        import traceback

        assert isinstance(record, logging.LogRecord)
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True
