"""The `Predictor` interface each framework implements, and the helpers they share.

A runtime module (e.g. `modelport.runtimes.sklearn.model`) subclasses `Predictor`, names
its model file extensions, and implements `load` and `infer`. Everything else (finding the
file, protocol decoding, threading, batching, errors, metrics) lives here in `base/`.
"""

from __future__ import annotations

import argparse
import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from modelport.base import registry
from modelport.base.config import MAX_MESSAGE_SIZE
from modelport.base.errors import ModelLoadError, ModelportError, NotAvailable
from modelport.base.messages import InferRequest, InferResponse, TensorSpec
from modelport.base.protocol import v1

#: Set once the server accepts requests (the app's start-up): background work after a load,
#: such as acceleration, waits for it so that start-up to ready does not pay for it.
SERVING = threading.Event()


@dataclass(slots=True)
class ModelSettings:
    """What one model needs to load: its name, version, directory and parameters.

    Built from the server flags, then overridden by an optional `model-settings.json` in
    the model's directory (fields: name, runtime, version, parameters, max_batch_size,
    max_batch_time, model_file).
    """

    name: str
    model_dir: Path
    version: str | None = None
    runtime: str | None = None
    model_file: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    max_batch_size: int | None = None
    max_batch_time: float = 0.0
    # The server's one message size limit (--max_request_size): what it reads from a
    # client, and what a component (transformer, explainer) reads from its predictor.
    max_message_size: int = MAX_MESSAGE_SIZE


class Predictor(ABC):
    """One loaded model. `load` is blocking and runs in a thread. `infer` and `explain` are
    either blocking (run on the predict pool, or inline when measured cheap) or `async def`
    (awaited on the event loop: for predictors that wait on another service)."""

    runtime: ClassVar[str] = ""
    # Adaptive batching when neither the flag nor model-settings.json sets it: only
    # runtimes whose models are row-independent by nature batch by default.
    default_max_batch_size: ClassVar[int] = 1
    # Model file suffixes this runtime loads (lower case, with the dot).
    extensions: ClassVar[tuple[str, ...]] = ()
    # False for components without artifacts (a transformer): the server then hosts one
    # model named --model_name whatever --model_dir holds.
    needs_model_dir: ClassVar[bool] = True
    # Request headers (lower-case names) this predictor passes on (a transformer: its
    # credentials, request id, trace): requests whose values differ are never batched
    # together, as a merged request carries only the first one's headers.
    batch_key_headers: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Runtime-specific CLI flags (e.g. `--nthread`); they reach `settings.parameters`."""

    @property
    def name(self) -> str:
        return self.settings.name

    @classmethod
    def holds_model(cls, directory: Path) -> bool:
        """Whether `directory` itself holds a model artifact of this runtime."""
        return any(_candidates(directory, cls.extensions))

    def model_file(self) -> Path:
        """The single model file in the model dir (or the one `--model_file` names)."""
        return find_model_file(self.settings.model_dir, self.extensions, self.settings.model_file)

    @abstractmethod
    def load(self) -> None:
        """Load the model from `settings.model_dir`; raise to fail loudly."""

    @abstractmethod
    def infer(self, request: InferRequest) -> InferResponse | Awaitable[InferResponse]:
        """Run one (possibly batched) inference."""

    def loaded(self) -> None:
        """Called right after `load` succeeds: start background work here (it must not
        block); raise to fail the load."""

    def unload(self) -> None:
        """Release resources; the default relies on garbage collection."""

    def is_ready(self) -> bool | Awaitable[bool]:
        """Whether this loaded model can serve now; components that depend on another
        service (a transformer's predictor) override it."""
        return True

    def metadata_parameters(self) -> dict[str, Any]:
        """Extra `parameters` for the V2 model metadata (e.g. which engine serves)."""
        return {}

    def inputs(self) -> list[TensorSpec]:
        """Input tensors for V2 metadata, when the framework knows them."""
        return []

    def outputs(self) -> list[TensorSpec]:
        """Output tensors for V2 metadata, when the framework knows them."""
        return []

    def decode_v1(self, body: Any) -> InferRequest:
        """V1 body to InferRequest; runtimes with their own V1 dialect override this."""
        return v1.decode_request(body)

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        """InferResponse to a V1 body."""
        return v1.encode_response(response)

    def explain(self, request: InferRequest) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Per-instance explanations; models without an explainer say so with a 501."""
        raise NotAvailable(f"model '{self.name}' has no explainer")


# Files of the server's own, never a model artifact (an XGBoost model may be `.json`).
NOT_ARTIFACTS = frozenset({"model-settings.json"})


def _candidates(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Non-hidden regular files in `directory` whose suffix is one of `extensions`."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if not path.name.startswith(".")
        and path.name not in NOT_ARTIFACTS
        and path.suffix.lower() in extensions
        and path.is_file()
    )


def find_model_file(directory: Path, extensions: tuple[str, ...], name: str | None = None) -> Path:
    """Exactly one model file, or a clear error for zero, several or a missing named one."""
    if name:
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"model file '{path}' (from --model_file) does not exist")
        return path
    if not directory.is_dir():
        raise ModelLoadError(f"model directory '{directory}' does not exist")
    found = _candidates(directory, extensions)
    wanted = ", ".join(extensions)
    if not found:
        raise ModelLoadError(f"no model file ({wanted}) found in '{directory}'")
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise ModelLoadError(
            f"several model files in '{directory}' ({names}): keep one or pass --model_file"
        )
    return found[0]


T = TypeVar("T")


def load_artifact(loader: Callable[[Path], T], path: Path) -> T:
    """Call a framework's loader, turning any failure into an error naming the file."""
    try:
        return loader(path)
    except ModelportError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load model file '{path}': {type(exc).__name__}: {exc}"
        ) from exc


def runtime_class(name: str) -> type[Predictor]:
    """Import the predictor class of a runtime by name, KServe modelFormat name (see
    `registry`) or `module:Class` path; only then is its framework imported."""
    known = registry.find(name)
    target = known.predictor if known else name
    module_name, _, class_name = target.partition(":")
    if not class_name:
        names = ", ".join(runtime.name for runtime in registry.RUNTIMES)
        raise ModelLoadError(f"unknown runtime '{name}'; known: {names}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = f"; install modelport[{known.extra}]" if known else ""
        raise ModelLoadError(f"runtime '{name}' is not installed here ({exc}){extra}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise ModelLoadError(f"'{target}' is not a Predictor class")
    return cls
