"""http(s):// via httpx: any Content-Type for plain files, archives by name or Content-Type.

Redirects are followed by hand (still httpx's URL resolution) so the per-host headers from
``<hostname>-headers`` are sent only to the origin (scheme, host, port) of the URL given, never
to another host or port a redirect points at nor over an https -> http downgrade; a redirect
to a scheme other than http(s) is a configuration error, not retried. Transient failures (connect errors, timeouts, a body cut short, 5xx/429)
are retried with exponential backoff; a body shorter than Content-Length is never accepted, nor
a gzip Content-Encoding whose stream stops early (the transfer can look complete).
The deadline (or a signal) shuts the socket down, so a stalled read stops at once.
"""

from __future__ import annotations

import posixpath
import socket
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from modelport.storage.archive import GZIP_TYPES, archive_suffix, content_type_says_archive
from modelport.storage.config import http_headers
from modelport.storage.errors import (
    AuthError,
    ConfigError,
    DownloadTimeoutError,
    NotFoundError,
    StorageError,
    TLSError,
)
from modelport.storage.job import Job


class _Transient(Exception):
    """A failure worth another attempt; carries the final error to raise if none is left."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


def file_name(uri: str) -> str:
    """Last path segment, percent-decoded; the query string never names the file."""
    try:
        path = urlsplit(uri).path
    except ValueError as exc:  # "http://[::1/x": a typo, not a fault
        raise ConfigError(uri, f"invalid URL: {exc}") from None
    name = posixpath.basename(unquote(path))
    if name in ("", ".", ".."):
        raise ConfigError(uri, "no file name in the URL path")
    return name


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit (httpx reports it as None)."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _get(client: httpx.Client, job: Job, target: Path) -> str:
    """One attempt: follow redirects, stream the body to ``target``; return the Content-Type."""
    url = httpx.URL(job.uri)
    origin = _origin(url)
    for _hop in range(job.transfer.max_redirects + 1):
        # The <host>-headers (usually Authorization) were configured for the URL the user
        # gave: they go only to that exact origin. A redirect to another host, another port
        # (another service) or from https to http (clear text) gets none.
        headers = http_headers(url.host) if _origin(url) == origin else {}
        request = client.build_request("GET", url, headers=headers)
        response = client.send(request, stream=True, follow_redirects=False)
        _abort_on_cancel(response, job)
        try:
            if response.is_redirect and response.next_request is not None:
                url = response.next_request.url
                if url.scheme not in _DEFAULT_PORTS:
                    # Not transient: the server will say the same on every retry.
                    raise ConfigError(
                        job.uri,
                        f"redirected to an unsupported scheme {url.scheme + '://'!r} "
                        "(only http:// and https:// redirects are followed)",
                    )
                continue
            return _save(response, job, target)
        finally:
            response.close()
    raise StorageError(job.uri, f"more than {job.transfer.max_redirects} redirects")


def _abort_on_cancel(response: httpx.Response, job: Job) -> None:
    """At the deadline (or a signal) shut the socket down, so a read blocked on a stalled
    server returns now instead of after the read timeout."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        job.progress.on_cancel(lambda: sock.shutdown(socket.SHUT_RDWR))


def _save(response: httpx.Response, job: Job, target: Path) -> str:
    code = response.status_code
    if code in (404, 410):
        raise NotFoundError(job.uri, f"HTTP {code}")
    if code in (401, 403):
        raise AuthError(job.uri, f"HTTP {code} (check the <hostname>-headers setting)")
    if code == 429 or code >= 500:
        raise _Transient(StorageError(job.uri, f"HTTP {code}"))
    if code != 200:
        raise StorageError(job.uri, f"unexpected HTTP {code}")
    length = response.headers.get("content-length")
    expected = int(length) if length and length.isdigit() else None
    if response.headers.get("content-encoding"):
        expected = None  # Content-Length counts encoded bytes; httpx still checks it
    if expected is not None:
        job.progress.expect(expected)
    gunzip = _Gunzip() if _encoding(response) in ("gzip", "x-gzip") else None
    written = 0
    try:
        with target.open("wb") as f:
            # As received: progress and deadline stay live.
            chunks = response.iter_bytes() if gunzip is None else map(gunzip, response.iter_raw())
            for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
                job.progress.add(len(chunk))
    except (httpx.TransportError, httpx.DecodingError) as exc:
        job.progress.add(-written)
        raise _Transient(_map(job.uri, exc, written, expected, in_body=True)) from None
    if expected is not None and written != expected:
        job.progress.add(-written)
        raise _Transient(StorageError(job.uri, f"body ended after {written} of {expected} bytes"))
    if gunzip is not None and not gunzip.complete:
        job.progress.add(-written)
        raise _Transient(
            StorageError(job.uri, f"gzip stream ended early (body cut short after {written} bytes)")
        )
    return response.headers.get("content-type", "")


def _encoding(response: httpx.Response) -> str:
    return response.headers.get("content-encoding", "").strip().lower()


class _Gunzip:
    """Decodes a gzip Content-Encoding (every member) and tells whether the stream is complete.

    httpx's decoder accepts a stream that stops in the middle (a server whose Content-Length
    counts fewer bytes than it compressed, or a close-delimited body cut off): the transfer
    looks complete, the decoded file is truncated, and it would be published.
    """

    def __init__(self) -> None:
        self._member: Any = None  # the member being decoded; None between members

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        try:
            while data:
                if self._member is None:
                    if not data.strip(b"\x00"):
                        break  # zero padding after the last member, as gzip.decompress allows
                    self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += self._member.decompress(data)
                if not self._member.eof:
                    break
                data = self._member.unused_data
                self._member = None
        except zlib.error as exc:
            raise httpx.DecodingError(f"invalid gzip body: {exc}") from None
        return bytes(out)

    @property
    def complete(self) -> bool:
        return self._member is None


def _map(
    uri: str, exc: Exception, written: int = 0, expected: int | None = None, in_body: bool = False
) -> StorageError:
    text = str(exc)
    if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
        return TLSError(uri, f"TLS failed: {text}")
    if isinstance(exc, httpx.TimeoutException):
        return DownloadTimeoutError(uri, f"{type(exc).__name__} (connect/read timeout)")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) and in_body:
        return StorageError(uri, f"connection closed mid-body ({text})")
    if isinstance(exc, httpx.ConnectError):
        return StorageError(uri, f"cannot connect: {text}")
    return StorageError(uri, f"{type(exc).__name__}: {text}")


def fetch(job: Job) -> list[str]:
    """Download the URL into ``job.payload``; return the one relative path written."""
    name = file_name(job.uri)
    if not job.keep(name, single=True):
        raise job.nothing_found(job.uri, 1)
    target = job.target(name)
    t = job.transfer
    timeout = httpx.Timeout(t.read_timeout, connect=t.connect_timeout, pool=t.connect_timeout)
    content_type = ""
    with httpx.Client(timeout=timeout, trust_env=True) as client:
        for attempt in range(t.retries + 1):
            try:
                content_type = _get(client, job, target)
                break
            except _Transient as exc:
                error = exc.error
            except httpx.TransportError as exc:
                error = _map(job.uri, exc)
                if isinstance(error, TLSError):
                    raise error from None
            except httpx.InvalidURL as exc:
                raise ConfigError(job.uri, f"invalid URL: {exc}") from None
            job.progress.check_deadline()  # a read cut short by the deadline reports the deadline
            if attempt == t.retries:
                raise error
            time.sleep(min(0.25 * 2**attempt, 10.0))
            job.progress.check_deadline()
    job.progress.file_done()
    if not archive_suffix(name) and content_type_says_archive(content_type):
        media = content_type.split(";", 1)[0].strip().lower()
        from modelport.storage.archive import looks_like_archive

        if looks_like_archive(target) or media not in GZIP_TYPES:
            job.archive_hints.add(name)  # a gzip that is not a tar stays a plain file
    return [name]
