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
    """The model exists but is loading, unloading or failed to load."""

    status = 503

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"model '{name}' is not ready" + (f": {reason}" if reason else ""))


class PayloadTooLarge(ModelportError):
    """The request body exceeds the configured cap."""

    status = 413


class ServerDraining(ModelportError):
    """The server is shutting down and takes no new inference work."""

    status = 503


class InferenceFailed(ModelportError):
    """The model itself raised while predicting: a fault on our side, not the client's."""

    status = 500


class NoOutputs(InferenceFailed):
    """The model answered with no output tensors: its fault (500), whatever the protocol."""

    def __init__(self, model: str | None = None) -> None:
        what = f"model '{model}'" if model else "the model"
        super().__init__(f"{what} produced no outputs")


class ModelLoadError(ModelportError):
    """A model could not be found or loaded from its directory."""

    status = 500
