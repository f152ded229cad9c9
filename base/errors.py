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
    """The model exists and is on its way to ready (loading, or evicted and brought back on
    the next request): a retry will help, hence 503."""

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"model '{name}' is not ready" + (f": {reason}" if reason else ""))


class ModelUnloaded(ModelportError):
    """The model is known but not loaded (unloaded through the repository API, or its
    load failed): a retry will not help until someone loads it, so a 4xx, not a 503.

    404 as Triton answers a model with no loaded version (NOT_FOUND, "has no available
    versions"); the message tells it apart from an unknown model.
    """

    def __init__(self, name: str, reason: str = "") -> None:
        if not reason or reason == "unloaded":
            message = f"model '{name}' is unloaded: load it with the model repository API"
        else:
            message = f"model '{name}' is not loaded: {reason}"
        super().__init__(message)


class PayloadTooLarge(ModelportError):
    """The request body exceeds the configured cap."""


class UnsupportedEncoding(ModelportError):
    """A request body in a Content-Encoding the server does not decode."""


class ServerDraining(ModelportError):
    """The server is shutting down and takes no new inference work."""


class Overloaded(ModelportError):
    """A model's queue of waiting requests is full: retry later (or elsewhere)."""


class RequestTimeout(ModelportError):
    """The request's work did not finish within `--request_timeout`."""


class InferenceFailed(ModelportError):
    """The model itself raised while predicting: a fault on our side, not the client's."""


#: The one answer (an `InferenceFailed`, 500) when a model returns nothing to send back.
NO_OUTPUTS = "the model produced no outputs"


class OutputNotRepresentable(ModelportError):
    """The model produced values the chosen encoding cannot carry (NaN in JSON): the
    request was fine, so not the client's fault; the message says which encoding can."""


class ModelLoadError(ModelportError):
    """A model could not be found or loaded from its directory."""


# The one table: error class -> (HTTP status, gRPC status code name).
STATUS_CODES: dict[type[ModelportError], tuple[int, str]] = {
    ModelportError: (500, "INTERNAL"),
    InvalidInput: (400, "INVALID_ARGUMENT"),
    ModelNotFound: (404, "NOT_FOUND"),
    NotAvailable: (501, "UNIMPLEMENTED"),
    ModelNotReady: (503, "UNAVAILABLE"),
    ModelUnloaded: (404, "NOT_FOUND"),
    PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
    UnsupportedEncoding: (415, "INVALID_ARGUMENT"),
    ServerDraining: (503, "UNAVAILABLE"),
    Overloaded: (503, "UNAVAILABLE"),
    RequestTimeout: (504, "DEADLINE_EXCEEDED"),
    InferenceFailed: (500, "INTERNAL"),
    OutputNotRepresentable: (500, "INTERNAL"),
    ModelLoadError: (500, "INTERNAL"),
}
for _cls, (_status, _code) in STATUS_CODES.items():
    _cls.status, _cls.grpc_code = _status, _code


# HTTP statuses the table above does not produce, as google.rpc.Code maps them (the mapping
# HTTP/JSON-to-gRPC gateways use; gRPC's own http-grpc-status-mapping.md is for a broken
# transport, not for an application's answer: it would make a 400 INTERNAL and a 404
# UNIMPLEMENTED). 409 is a conflict with the current state: retry the sequence, ABORTED.
_HTTP_TO_GRPC: dict[int, str] = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
}


def grpc_code_for_http(status: int) -> str:
    """The gRPC code for an HTTP status (for errors relayed from an HTTP peer): the table's
    (404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 501 UNIMPLEMENTED, ...), then google.rpc.Code's;
    any other 4xx is INVALID_ARGUMENT, any other status INTERNAL."""
    code = _HTTP_TO_GRPC.get(status)
    if code is not None:
        return code
    for http, code in STATUS_CODES.values():
        if http == status:
            return code
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"
