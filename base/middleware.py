"""Per-request observability as one pure-ASGI layer: request id, metrics, access log.

It also turns an unexpected exception into a 500 `{"error": ...}` (the traceback goes to the
log once, never into the body; Starlette's error middleware would re-raise it), and while the
server drains it answers with `Connection: close`, so keep-alive clients open a new
connection (to another replica) instead of writing onto one about to close.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.base.logs import AccessLog

if TYPE_CHECKING:
    from modelport.base.dataplane import DataPlane

error_log = logging.getLogger("modelport.server")
_REQUEST_ID = b"x-request-id"
_CLOSE = (b"connection", b"close")
# The V1 verbs a path may name (none: the model's own status) -> the endpoint label.
_V1_VERBS = {"": "model", "predict": "predict", "explain": "explain"}


def classify(path: str) -> tuple[str, str, str]:
    """(model, protocol, endpoint) labels for a path, with bounded cardinality."""
    if path.startswith("/v2/models/"):
        parts = path.split("/")
        endpoint = parts[-1] if len(parts) > 4 else "metadata"
        if endpoint not in ("infer", "ready"):
            endpoint = "metadata"
        return parts[3], "v2", endpoint
    if path.startswith("/v1/models/"):
        name, _, verb = path[len("/v1/models/") :].partition(":")
        if verb in _V1_VERBS:
            return name, "v1", _V1_VERBS[verb]
        return "", "", "other"  # any verb a client makes up would be a new series
    if path.startswith("/v2/repository/"):
        return "", "v2", "repository"
    if path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models"):
        return "", "v2", path.rsplit("/", 1)[-1] or "server"
    if path in ("/", "/metrics", "/v1/models"):
        return "", "", path
    return "", "", "other"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, dataplane: DataPlane) -> None:
        self.app = app
        self.dataplane = dataplane
        self.access_log = AccessLog()
        self.access = self.access_log.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        dataplane = self.dataplane
        request_id = header(scope, _REQUEST_ID) or dataplane.new_request_id()
        id_header = (_REQUEST_ID, request_id.encode("latin-1"))
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [*message.get("headers", []), id_header]
                if dataplane.draining:
                    headers.append(_CLOSE)
                message["headers"] = headers
            await send(message)

        path: str = scope["path"]
        model, protocol, endpoint = classify(path)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            body = unexpected_error(exc, path, request_id)
            if not response_started:
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            self.record(
                scope["method"], path, model, protocol, endpoint, status, started, request_id
            )

    def record(
        self,
        method: str,
        path: str,
        model: str,
        protocol: str,
        endpoint: str,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        """Metrics and the access line of one answered request."""
        elapsed = time.perf_counter() - started
        if endpoint != "other":
            self.dataplane.observe_request(model, protocol, endpoint, status, elapsed)
        if self.access:
            self.access_log.write(
                {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": request_id,
                    "model": model or None,
                }
            )


def unexpected_error(exc: Exception, path: str, request_id: str) -> bytes:
    """Log a bug once, with its traceback, and give the 500 body that names it (never the
    traceback)."""
    error_log.error(
        "unexpected server error",
        extra={"path": path, "request_id": request_id, "error": f"{type(exc).__name__}: {exc}"},
        exc_info=exc,
    )
    return internal_error_body(exc)


def internal_error_body(exc: BaseException) -> bytes:
    """The `{"error": ...}` body of a 500 caused by a bug: names the exception, no traceback."""
    return orjson.dumps({"error": f"internal server error: {type(exc).__name__}: {exc}"})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
