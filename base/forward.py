"""The pooled async client a component (transformer, explainer) uses to reach its predictor.

One `PredictorClient` per process: an `aiohttp` session with keep-alive connections for
V1 and V2 REST (aiohttp, not httpx: a forwarded request costs a fraction of httpx's CPU time,
which is most of a transformer's own cost), a `grpc.aio` channel for `grpc-v2`. Every failure becomes a `PredictorError`
(a `ModelportError`) whose message names the predictor and what happened, with the status
a client of the component should see:

- the predictor's own 4xx (and 501) passes through with its status and message;
- the predictor not ready (503) stays 503; unreachable, refusing or failing otherwise is 502;
- no answer within the timeout is 504.

Retries (`retries`, default 0) happen only on connection failures and 503, where the request
certainly did not run. Independently of them, a request that went out on a pooled keep-alive
connection the predictor had just closed (it died before any answer arrived) is sent once more:
the idle close raced the request, and the predictor never saw it.
"""

from __future__ import annotations

import asyncio
import errno
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from modelport.base.config import MAX_MESSAGE_SIZE
from modelport.base.errors import InvalidInput, ModelportError, grpc_code_for_http
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.protocol import v2_client

PROTOCOLS = ("v1", "v2", "grpc-v2")
# What a component passes on to the predictor: request identity, tracing (B3 and W3C;
# KServe forwards neither W3C header) and credentials.
FORWARDED_HEADERS = frozenset(
    {
        "x-request-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "b3",
        "traceparent",
        "tracestate",
        "authorization",
    }
)
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_JSON = "application/json"
_BACKOFF_S = 0.05
_BACKOFF_MAX_S = 1.0
# Idle keep-alive connections are dropped after this long, below the idle timeout of the
# predictor (uvicorn closes after 5 s; aiohttp's default keeps them 15 s). A connection the
# server closes first is found dead only when the next request goes out on it.
KEEPALIVE_S = 4.0
# A readiness check gives up after this long (or the request timeout, if shorter): a probe
# answers in seconds (Kubernetes waits 1 s by default), and a check a hung predictor holds for
# the whole request timeout only piles up, and holds up shutdown.
READY_TIMEOUT_S = 5.0
# How a connection the peer already closed fails a request written to it.
_DEAD_CONNECTION_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})

T = TypeVar("T")


class PredictorError(ModelportError):
    """Something about the predictor; the status is what the component's client sees."""

    status = 502
    grpc_code = "UNAVAILABLE"


class PredictorRejected(PredictorError):
    """The predictor answered with a 4xx (or 501): its status and message pass through."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code_for_http(status)


class PredictorUnavailable(PredictorError):
    """Unreachable, refusing the connection, or failing with a 5xx: a bad gateway."""

    status = 502


class PredictorNotReady(PredictorError):
    """The predictor answered 503 (loading, draining) on every try."""

    status = 503


class PredictorTimeout(PredictorError):
    """No answer within --predictor_request_timeout_seconds."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class Answer(NamedTuple):
    """A predictor's HTTP answer, read in full."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    reason: str = ""


# Whether the request being sent in this task went out on a kept-alive connection from the
# pool (set by _PoolConnector.connect, which runs inside the request's own task).
_reused: ContextVar[bool] = ContextVar("modelport_forward_reused", default=False)


class _PoolConnector(aiohttp.TCPConnector):
    """A TCPConnector that notes whether it hands a request a connection used before: only
    such a connection can have been closed under it by the predictor's idle timeout. (A
    request trace would say the same, but makes every request pay for a dozen signals.)"""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            reused = protocol in self._handed_out
            if not reused:
                self._handed_out.add(protocol)
            _reused.set(reused)
        return connection


class _StaleConnection(Exception):
    """Internal: the request went out on a reused connection that was already closed."""


class _Retry(Exception):
    """Internal: a failure that is safe to retry, wrapping the error to raise at the end."""

    def __init__(self, error: PredictorError) -> None:
        self.error = error


def forwarded(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The subset of incoming headers (any case) that travels on to the predictor."""
    if not headers:
        return {}
    return {
        key.lower(): value for key, value in headers.items() if key.lower() in FORWARDED_HEADERS
    }


def base_url(host: str, use_ssl: bool) -> str:
    """`host[:port]` (KServe's --predictor_host) as a URL; a given scheme is kept."""
    if "://" in host:
        return host.rstrip("/")
    return f"{'https' if use_ssl else 'http'}://{host}"


class PredictorClient:
    """Forward inference to one predictor over V1, V2 REST or V2 gRPC."""

    def __init__(
        self,
        host: str,
        protocol: str = "v1",
        *,
        use_ssl: bool = False,
        timeout: float = 600.0,
        retries: int = 0,
        max_answer_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown predictor protocol '{protocol}'; use {', '.join(PROTOCOLS)}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.host = host
        self.protocol = protocol
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.retries = retries
        # A predictor's answer is read into memory: one larger than this (the server's
        # --max_request_size) is refused while it arrives, so a broken or hostile
        # predictor cannot grow the component without bound.
        self.max_answer_size = max_answer_size
        self.url = base_url(host, use_ssl)
        self._http: aiohttp.ClientSession | None = None
        self._grpc: Any = None  # modelport.base.forward_grpc.GrpcForwarder, made on first use

    # --- transports -----------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        """The keep-alive pool, made on first use (inside the event loop that uses it)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                base_url=self.url,
                # No cap on connections: the server's own concurrency bounds them.
                connector=_PoolConnector(limit=0, keepalive_timeout=KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # The predictor is named explicitly; a proxy from the environment is not wanted.
                trust_env=False,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._http

    def _grpc_forwarder(self) -> Any:
        if self._grpc is None:
            from modelport.base.forward_grpc import GrpcForwarder

            self._grpc = GrpcForwarder(self)
        return self._grpc

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._grpc is not None:
            await self._grpc.aclose()
            self._grpc = None

    # --- operations -----------------------------------------------------------------

    async def infer(
        self, model: str, request: InferRequest, headers: Mapping[str, str] | None = None
    ) -> InferResponse:
        """One V2 inference (REST with the binary extension, or gRPC for `grpc-v2`)."""
        if self.protocol == "grpc-v2":
            grpc_forwarder = self._grpc_forwarder()
            return await self.with_retries(lambda: grpc_forwarder.infer(model, request, headers))
        body, json_length = v2_client.encode_request(request)
        request_headers = forwarded(headers)
        request_headers["content-type"] = (
            _JSON if json_length is None else "application/octet-stream"
        )
        if json_length is not None:
            request_headers["inference-header-content-length"] = str(json_length)
        answer = await self.with_retries(
            lambda: self._post(f"/v2/models/{model}/infer", body, request_headers)
        )
        length = answer.headers.get("inference-header-content-length")
        try:
            return v2_client.decode_response(answer.content, int(length) if length else None)
        except (InvalidInput, ValueError) as exc:
            message = exc.message if isinstance(exc, InvalidInput) else str(exc)
            raise PredictorUnavailable(
                f"predictor {self.host} sent an invalid V2 response: {message}"
            ) from None

    async def predict_v1(
        self, model: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """One V1 `:predict` call; `body` is JSON-ready (numpy arrays allowed). The answer
        is the predictor's JSON object."""
        payload = orjson.dumps(body, option=_OPTIONS)
        request_headers = {**forwarded(headers), "content-type": _JSON}
        answer = await self.with_retries(
            lambda: self._post(f"/v1/models/{model}:predict", payload, request_headers)
        )
        try:
            doc = orjson.loads(answer.content)
        except orjson.JSONDecodeError as exc:
            raise PredictorUnavailable(
                f"predictor {self.host} sent a V1 response that is not JSON: {exc}"
            ) from None
        if not isinstance(doc, dict):
            # A V1 answer is an object ({"predictions": ...}); handing anything else on
            # would blame the transformer's postprocess for the predictor's answer.
            raise PredictorUnavailable(
                f"predictor {self.host} sent a V1 response that is not a JSON object "
                f"but {_json_kind(doc)}"
            )
        return doc

    async def is_ready(self, model: str) -> bool:
        """Whether the predictor serves `model` now; any failure counts as not ready."""
        try:
            if self.protocol == "grpc-v2":
                return bool(await self._grpc_forwarder().is_ready(model))
            path = f"/v1/models/{model}" if self.protocol == "v1" else f"/v2/models/{model}/ready"
            timeout = aiohttp.ClientTimeout(total=self.ready_timeout)
            async with self.http.get(path, allow_redirects=False, timeout=timeout) as response:
                status, content = response.status, await self._read(response)
        except (aiohttp.ClientError, PredictorError, OSError, TimeoutError):
            return False
        if status != 200:
            return False
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return False
        return isinstance(doc, dict) and doc.get("ready") is True

    @property
    def ready_timeout(self) -> float:
        """Seconds a readiness check waits (see READY_TIMEOUT_S)."""
        return min(self.timeout, READY_TIMEOUT_S)

    # --- plumbing -------------------------------------------------------------------

    async def with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`; on a retryable failure try again (backing off) up to `retries`."""
        delay = _BACKOFF_S
        for tries_left in range(self.retries, -1, -1):
            try:
                return await attempt()
            except _Retry as retry:
                if tries_left == 0:
                    raise retry.error from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
        raise AssertionError("unreachable")

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            return await self._post_once(path, body, headers, stale_retry=True)
        except _StaleConnection:
            # The predictor closed this idle keep-alive connection as the request went out
            # on it (RFC 9112 9.3.1): nothing was answered, so it never ran the request.
            # Once, whatever --predictor_request_retries says; the resend takes another
            # pooled connection or a new one, and fails like any request.
            return await self._post_once(path, body, headers, stale_retry=False)

    async def _post_once(
        self, path: str, body: bytes, headers: dict[str, str], *, stale_retry: bool
    ) -> Answer:
        _reused.set(False)  # set again by the connector once it hands out a connection
        answered = False
        try:
            # A redirect is not followed: it would carry the request (and its credentials)
            # to a host nobody named; a 3xx is the predictor's unexpected answer, a 502.
            async with self.http.post(
                path, data=body, headers=headers, allow_redirects=False
            ) as response:
                answered = True
                answer = Answer(
                    response.status,
                    response.headers,
                    await self._read(response),
                    response.reason or "",
                )
        except aiohttp.ConnectionTimeoutError:
            raise _Retry(self.timed_out("connecting")) from None
        except TimeoutError:
            raise self.timed_out("waiting for the answer") from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(self.unreachable(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            if stale_retry and not answered and _reused.get() and _dead(exc):
                raise _StaleConnection from None
            raise PredictorUnavailable(
                f"predictor {self.host} failed: {type(exc).__name__}: {exc}"
            ) from None
        if answer.status == 200:
            return answer
        raise self.status_error(answer.status, _error_message(answer))

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The answer's body, refused (502) as soon as it is known to exceed the cap: from
        its Content-Length, or while a chunked body arrives. The connection is then closed,
        not reused."""
        limit = self.max_answer_size
        length = response.content_length
        if length is not None:
            if length > limit:
                response.close()  # the unread body stays out of the pool
                raise self.too_large(f"{length} bytes")
            return await response.read()  # exactly Content-Length bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                response.close()
                raise self.too_large(f"more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def too_large(self, size: str) -> PredictorUnavailable:
        return PredictorUnavailable(
            f"predictor {self.host} sent an answer of {size}, over the limit of "
            f"{self.max_answer_size} bytes (--max_request_size)"
        )

    def timed_out(self, doing: str) -> PredictorTimeout:
        return PredictorTimeout(f"predictor {self.host} timed out after {self.timeout:g}s {doing}")

    def unreachable(self, exc: BaseException) -> PredictorUnavailable:
        reason = str(exc) or type(exc).__name__
        return PredictorUnavailable(f"predictor {self.host} is unreachable: {reason}")

    def status_error(self, status: int, message: str) -> PredictorError | _Retry:
        """The error for a non-200 answer (a _Retry for the retryable 503)."""
        text = f"predictor {self.host} answered {status}: {message}"
        if status == 503:
            return _Retry(PredictorNotReady(text))
        if 400 <= status < 500 or status == 501:
            return PredictorRejected(f"predictor {self.host}: {message}", status)
        if status == 504:
            return PredictorTimeout(text)
        return PredictorUnavailable(text)


def _dead(exc: BaseException) -> bool:
    """Whether a request failed because its connection was closed before any answer: a
    clean close with no status line (with aiohttp's C parser, no partial answer survives
    to tell it from one cut short mid-head), or a reset or broken pipe while sending or
    waiting. An answer cut short in its body is a ClientPayloadError, never this."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)  # a RawResponseMessage: the head had arrived
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in _DEAD_CONNECTION_ERRNOS


def _json_kind(doc: Any) -> str:
    """What a JSON value is, in words (for error messages)."""
    if isinstance(doc, list):
        return "an array"
    if isinstance(doc, str):
        return "a string"
    if isinstance(doc, bool):
        return "a boolean"
    return "null" if doc is None else "a number"


def _error_message(answer: Answer) -> str:
    """The predictor's `{"error": ...}` message, or the start of whatever it sent."""
    try:
        doc = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "detail", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    text = answer.content[:200].decode("utf-8", "replace").strip()
    return text or answer.reason or "no message"
