"""The error hierarchy every layer raises, and the one table that maps it to status codes.

Handlers never build error answers by hand: they raise one of these and the transport turns
it into its own form: REST answers `{"error": "<message>"}` with the HTTP status, gRPC aborts
with the status code, both with the same message. Anything else escaping a model is a real
fault (HTTP 500, gRPC INTERNAL) and its message, not its traceback, reaches the client.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class; `status` (HTTP) and `grpc_code` (a `grpc.StatusCode` name) come from
    `STATUS_CODES` below."""

    status: int = 500
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    """The client sent something malformed or inconsistent (shape, datatype, fields)."""


class ModelNotFound(ModelportError):
    """No model (or version) of that name is known to this server."""

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"model '{name}' version '{version}'" if version else f"model '{name}'"
        super().__init__(f"{what} not found")


class NotAvailable(ModelportError):
    """The endpoint exists but this model or server does not offer it (no explainer...)."""


class ModelNotReady(ModelportError):
    """The model exists but is loading, unloading or failed to load."""

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"model '{name}' is not ready" + (f": {reason}" if reason else ""))


class PayloadTooLarge(ModelportError):
    """The request body exceeds the configured cap."""


class ServerDraining(ModelportError):
    """The server is shutting down and takes no new inference work."""


class Overloaded(ModelportError):
    """A model's queue of waiting requests is full: retry later (or elsewhere)."""


class RequestTimeout(ModelportError):
    """The request's work did not finish within `--request_timeout`."""


class InferenceFailed(ModelportError):
    """The model itself raised while predicting: a fault on our side, not the client's."""


class ModelLoadError(ModelportError):
    """A model could not be found or loaded from its directory."""


# The one table: error class -> (HTTP status, gRPC status code name).
STATUS_CODES: dict[type[ModelportError], tuple[int, str]] = {
    ModelportError: (500, "INTERNAL"),
    InvalidInput: (400, "INVALID_ARGUMENT"),
    ModelNotFound: (404, "NOT_FOUND"),
    NotAvailable: (501, "UNIMPLEMENTED"),
    ModelNotReady: (503, "UNAVAILABLE"),
    PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
    ServerDraining: (503, "UNAVAILABLE"),
    Overloaded: (503, "UNAVAILABLE"),
    RequestTimeout: (504, "DEADLINE_EXCEEDED"),
    InferenceFailed: (500, "INTERNAL"),
    ModelLoadError: (500, "INTERNAL"),
}
for _cls, (_status, _code) in STATUS_CODES.items():
    _cls.status, _cls.grpc_code = _status, _code


def grpc_code_for_http(status: int) -> str:
    """The gRPC code for an HTTP status (for errors relayed from an HTTP peer)."""
    for http, code in STATUS_CODES.values():
        if http == status:
            return code
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"
