"""The error hierarchy every layer raises, and the one place it becomes an HTTP status.

Handlers never build error responses by hand: they raise one of these and the app turns
it into `{"error": "<message>"}` with the status below. Anything else escaping a model is
a real fault (500) and its message, not its traceback, reaches the client.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: `status` is the HTTP status code the error maps to."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    """The client sent something malformed or inconsistent (shape, datatype, fields)."""

    status = 400


class ModelNotFound(ModelportError):
    """No model (or version) of that name is known to this server."""

    status = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"model '{name}' version '{version}'" if version else f"model '{name}'"
        super().__init__(f"{what} not found")


class NotAvailable(ModelportError):
    """The endpoint exists but this model or server does not offer it (no explainer...)."""

    status = 501


class ModelNotReady(ModelportError):
    """The model exists and is on its way to ready (loading, or evicted and brought back on
    the next request): a retry will help, hence 503."""

    status = 503

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"model '{name}' is not ready" + (f": {reason}" if reason else ""))


class ModelUnloaded(ModelportError):
    """The model is known but not loaded (unloaded through the repository API, or its
    load failed): a retry will not help until someone loads it, so a 4xx, not a 503.

    404 as Triton answers a model with no loaded version (NOT_FOUND, "has no available
    versions"); the message tells it apart from an unknown model.
    """

    status = 404

    def __init__(self, name: str, reason: str = "") -> None:
        if not reason or reason == "unloaded":
            message = f"model '{name}' is unloaded: load it with the model repository API"
        else:
            message = f"model '{name}' is not loaded: {reason}"
        super().__init__(message)


class PayloadTooLarge(ModelportError):
    """The request body exceeds the configured cap."""

    status = 413


class ServerDraining(ModelportError):
    """The server is shutting down and takes no new inference work."""

    status = 503


class InferenceFailed(ModelportError):
    """The model itself raised while predicting: a fault on our side, not the client's."""

    status = 500


#: The one answer (an `InferenceFailed`, 500) when a model returns nothing to send back.
NO_OUTPUTS = "the model produced no outputs"


class OutputNotRepresentable(ModelportError):
    """The model produced values the chosen encoding cannot carry (NaN in JSON): the
    request was fine, so not the client's fault; the message says which encoding can."""

    status = 500


class ModelLoadError(ModelportError):
    """A model could not be found or loaded from its directory."""

    status = 500
