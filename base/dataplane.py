"""The data plane: everything a transport asks of the server, with no bytes and no HTTP.

REST (`app.py`) and gRPC (`grpc/service.py`) are thin adapters: they decode their wire
format into an `InferRequest`, call a method here and encode what it returns. Health,
readiness, metadata, inference (batched, timed, bounded), explanations and the model
repository live here once, as does the in-flight count that a graceful shutdown waits for.
Errors are raised as `ModelportError`s; each transport maps them through `errors.STATUS_CODES`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from prometheus_client.metrics import Histogram

from modelport.base import metrics as metrics_module
from modelport.base.config import ServerConfig
from modelport.base.errors import ModelportError, NotAvailable, RequestTimeout
from modelport.base.messages import Headers, InferRequest, InferResponse
from modelport.base.pool import PredictPool
from modelport.base.protocol import v2
from modelport.base.repository import ModelRepository, ModelVersion, State
from modelport.base.runner import ModelRunner

log = logging.getLogger("modelport.server")

SERVER_NAME = "modelport"
SERVER_VERSION = "0.1.0"


class ModelTimers(NamedTuple):
    """KServe's per-model latency histograms, labelled once per model."""

    preprocess: Histogram
    predict: Histogram
    postprocess: Histogram
    explain: Histogram


class DataPlane:
    """The server's state and operations, shared by every transport of one process."""

    def __init__(self, config: ServerConfig, repository: ModelRepository) -> None:
        self.config = config
        self.repository = repository
        self.limits = v2.Limits(config.max_inputs, config.max_tensor_elements)
        self.pool = PredictPool(config.predict_threads)
        self.runners: dict[int, ModelRunner] = {}
        self.metrics = metrics_module.process_metrics()
        self.timers: dict[str, ModelTimers] = {}
        self.draining = False
        self.drain_started = asyncio.Event()  # for what must react at once (health Watch)
        self.in_flight = 0
        # Request ids for requests that bring none: unique per process, no syscall each.
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}-{os.urandom(4).hex()}-"
        repository.on_change.append(self._models_changed)

    # --- bookkeeping shared by the transports ---------------------------------------

    def begin_drain(self) -> None:
        """Take no new work from now on, and wake what waits for the drain. Called from a
        signal handler: the wake-up is handed to the running loop thread-safely."""
        self.draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here (tests calling it directly): nothing waits
            self.drain_started.set()
            return
        loop.call_soon_threadsafe(self.drain_started.set)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count a request in flight for its whole life: a drain waits for it."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def timers_for(self, name: str) -> ModelTimers:
        timers = self.timers.get(name)
        if timers is None:
            m = self.metrics
            timers = ModelTimers(
                m.preprocess.labels(name),
                m.predict.labels(name),
                m.postprocess.labels(name),
                m.explain.labels(name),
            )
            self.timers[name] = timers
        return timers

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: int | str, seconds: float
    ) -> None:
        """One answered request in the request metrics. The model label is the name the
        client sent only when this server knows that model: names come from clients, and
        each new label value is a series kept for the process' life (unbounded memory and
        /metrics size); requests for unknown models share the label ""."""
        if model and model not in self.repository.models:
            model = ""
        self.metrics.observe_request(model, protocol, endpoint, status, seconds)

    def observe_codec(self, name: str, decode_seconds: float, encode_seconds: float) -> None:
        """Wire decoding and encoding, as KServe's pre- and post-processing histograms."""
        timers = self.timers_for(name)
        timers.preprocess.observe(decode_seconds)
        timers.postprocess.observe(encode_seconds)

    # --- health and metadata ----------------------------------------------------------

    def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        """Ready once the start-up load finished and until a drain starts; predictors that
        depend on another service (transformers) may add their own condition."""
        if self.draining or not self.repository.all_ready():
            return False
        for name in self.repository.ready_models():
            entry = self.repository.version(name)
            if entry.predictor is not None and not await _is_ready(entry):
                return False
        return True

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        entry = self.repository.version(name, version)
        return entry.state is State.READY and await _is_ready(entry)

    def server_metadata(self) -> dict[str, Any]:
        extensions = ["binary_tensor_data"]
        if self.config.enable_model_repository:
            extensions.append("model_repository")
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": extensions}

    def model_names(self) -> list[str]:
        return self.repository.ready_models()

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        entry = await self.repository.predictor(name, version)
        predictor = entry.predictor
        assert predictor is not None
        versions = [key for key in self.repository.models[name].versions if key is not None]
        doc: dict[str, Any] = {
            "name": name,
            "versions": versions,
            "platform": predictor.runtime,
            "inputs": [spec.to_dict() for spec in predictor.inputs()],
            "outputs": [spec.to_dict() for spec in predictor.outputs()],
        }
        parameters = predictor.metadata_parameters()
        if parameters:
            doc["parameters"] = parameters
        return doc

    # --- inference ------------------------------------------------------------------------

    async def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The READY version a request names (404 unknown, 503 not ready)."""
        return await self.repository.predictor(name, version)

    async def infer(self, name: str, version: str | None, request: InferRequest) -> InferResponse:
        """One V2 inference: batched, off the event loop unless cheap, timed, bounded."""
        entry = await self.repository.predictor(name, version)
        return await self.infer_resolved(name, entry, request)

    async def infer_resolved(
        self, name: str, entry: ModelVersion, request: InferRequest
    ) -> InferResponse:
        """`infer` for a version already resolved (the REST adapter resolves it before it
        decodes the body, so an unknown model is a 404 whatever the body)."""
        started = time.perf_counter()
        runner = self.runners.get(id(entry.predictor)) or self._runner(entry)
        if self.config.request_timeout:
            response = await self._bounded(runner.run(request))
        else:
            response = await runner.run(request)
        self.timers_for(name).predict.observe(time.perf_counter() - started)
        response.model_name = name
        response.model_version = entry.settings.version
        return response

    async def predict_v1(self, name: str, body: Any, headers: Headers) -> Any:
        """One V1 `:predict`: the predictor's own V1 dialect around the same inference."""
        entry = await self.repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        timers = self.timers_for(name)
        started = time.perf_counter()
        request = predictor.decode_v1(body)
        request.raw_headers = headers
        decoded = time.perf_counter()
        response = await self._bounded(self._runner(entry).run(request))
        predicted = time.perf_counter()
        doc = predictor.encode_v1(response)
        timers.preprocess.observe(decoded - started)
        timers.predict.observe(predicted - decoded)
        timers.postprocess.observe(time.perf_counter() - predicted)
        return doc

    async def explain_v1(self, name: str, body: Any, headers: Headers) -> Any:
        """One V1 `:explain` (501 for models without an explainer)."""
        entry = await self.repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        request = predictor.decode_v1(body)
        request.raw_headers = headers
        started = time.perf_counter()
        if inspect.iscoroutinefunction(predictor.explain):
            result = await self._bounded(predictor.explain(request))
        else:
            result = await self._bounded(self.pool.run(predictor.explain, request))
        self.timers_for(name).explain.observe(time.perf_counter() - started)
        return result

    async def _bounded(self, work: Any) -> Any:
        """Await `work` within `--request_timeout` (off by default, as in KServe)."""
        timeout = self.config.request_timeout
        if not timeout:
            return await work
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"the request did not finish within --request_timeout={timeout:g} s"
            ) from None

    def _runner(self, entry: ModelVersion) -> ModelRunner:
        predictor = entry.predictor
        assert predictor is not None
        runner = self.runners.get(id(predictor))
        if runner is None:
            runner = ModelRunner(
                predictor,
                self.pool,
                batch_size=entry.settings.max_batch_size or predictor.default_max_batch_size,
                batch_time=entry.settings.max_batch_time,
                max_queued=self.config.max_queued_requests,
                inline_limit=self.config.inline_predict_limit,
            )
            self.runners[id(predictor)] = runner
        return runner

    # --- model repository extension ---------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model version and its state; with `ready_only`, the READY ones (the
        extension's `{"ready": true}`)."""
        self._require_repository()
        rows = self.repository.index()
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows

    async def load(self, name: str) -> None:
        """Load (or reload) a model; a failure of any of its versions fails the call, as in
        Triton (the versions that loaded serve)."""
        self._require_repository()
        name = await self.repository.load(name)  # the served name (a directory's may differ)
        failed = [
            entry.reason or f"model '{name}' failed to load"
            for entry in self.repository.models[name].versions.values()
            if entry.state is not State.READY
        ]
        if failed:
            raise ModelportError("; ".join(failed))

    async def unload(self, name: str) -> None:
        self._require_repository()
        await self.repository.unload(name)

    def _require_repository(self) -> None:
        if not self.config.enable_model_repository:
            raise NotAvailable("the model repository extension is disabled on this server")

    def _models_changed(self, repository: ModelRepository) -> None:
        """Drop runners of unloaded predictors and update the loaded-models gauge."""
        live = {
            id(entry.predictor)
            for model in repository.models.values()
            for entry in model.versions.values()
            if entry.predictor is not None
        }
        for key in list(self.runners):
            if key not in live:
                del self.runners[key]
        self.metrics.loaded_models.set(len(repository.ready_models()))

    def shutdown(self) -> None:
        self.pool.shutdown()


async def _is_ready(entry: ModelVersion) -> bool:
    predictor = entry.predictor
    if predictor is None:
        return False
    answer = predictor.is_ready()
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


# Server-side answers that are states, not faults: not offered (501), not ready, draining or
# overloaded (503), out of time (504). The access line and the metrics count them; a
# traceback per request would only flood the log, under overload most of all.
_STATES = frozenset({501, 503, 504})


def log_failure(where: str, exc: ModelportError) -> None:
    """Server-side faults are logged once, with the traceback (the model's, through the
    exception's cause); client errors and server states (`_STATES`) are not logged.
    Answers never carry tracebacks."""
    if exc.status >= 500 and exc.status not in _STATES:
        log.warning("request failed", extra={"path": where, "error": exc.message}, exc_info=exc)
