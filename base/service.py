"""The inference service behind the HTTP routes: decode, predict off the loop, encode.

Handlers here take raw bytes and return raw bytes, so the same code serves both the
Starlette routes and the lean ASGI fast path for POST inference (see `app.py`). Errors are
raised as `ModelportError`s and mapped to status codes by the caller.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, NamedTuple

import orjson
from prometheus_client.metrics import Histogram

from modelport.base import metrics as metrics_module
from modelport.base.batching import Batcher
from modelport.base.config import ServerConfig
from modelport.base.errors import InvalidInput
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.pool import PredictPool
from modelport.base.protocol import v2
from modelport.base.repository import ModelRepository, ModelVersion

JSON = b"application/json"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class Reply(NamedTuple):
    """An HTTP answer as bytes: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_reply(doc: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(doc, option=_OPTIONS))


class ModelTimers(NamedTuple):
    """KServe's per-model latency histograms, labelled once per model."""

    preprocess: Histogram
    predict: Histogram
    postprocess: Histogram
    explain: Histogram


class ServerState:
    """What the handlers share: config, models, the predict pool, batchers, drain flag."""

    def __init__(self, config: ServerConfig, repository: ModelRepository) -> None:
        self.config = config
        self.repository = repository
        self.limits = v2.Limits(config.max_inputs, config.max_tensor_elements)
        self.pool = PredictPool(config.predict_threads)
        self.batchers: dict[int, Batcher] = {}
        self.metrics = metrics_module.process_metrics()
        self.timers: dict[str, ModelTimers] = {}
        self.draining = False
        self.in_flight = 0
        # Request ids for requests that bring none: unique per process, no syscall each.
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}-{os.urandom(4).hex()}-"
        repository.on_change.append(self._models_changed)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

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

    async def infer(self, entry: ModelVersion, request: InferRequest) -> InferResponse:
        """Run a blocking predict off the event loop, batched when the model asks for it."""
        predictor = entry.predictor
        assert predictor is not None
        batch_size = entry.settings.max_batch_size or predictor.default_max_batch_size
        if batch_size > 1:
            batcher = self.batchers.get(id(predictor))
            if batcher is None:
                batcher = Batcher(predictor, self.pool, batch_size, entry.settings.max_batch_time)
                self.batchers[id(predictor)] = batcher
            return await batcher.submit(request)
        return await self.pool.run(predictor.infer, request)

    # --- handlers: bytes in, Reply out ----------------------------------------------

    async def v2_infer(
        self, name: str, version: str | None, body: bytes, header_length: bytes | str | None
    ) -> Reply:
        entry = await self.repository.predictor(name, version)
        timers = self.timers_for(name)
        started = time.perf_counter()
        request = v2.decode_request(body, _header_length(header_length), self.limits)
        decoded = time.perf_counter()
        response = await self.infer(entry, request)
        predicted = time.perf_counter()
        payload, json_length = v2.encode_response(response, request, name, entry.settings.version)
        timers.preprocess.observe(decoded - started)
        timers.predict.observe(predicted - decoded)
        timers.postprocess.observe(time.perf_counter() - predicted)
        if json_length is None:
            return Reply(200, payload)
        return Reply(
            200,
            payload,
            b"application/octet-stream",
            ((b"inference-header-content-length", str(json_length).encode()),),
        )

    async def v1_predict(self, name: str, body: bytes) -> Reply:
        entry = await self.repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        timers = self.timers_for(name)
        started = time.perf_counter()
        request = predictor.decode_v1(v2.parse_json(body))
        decoded = time.perf_counter()
        response = await self.infer(entry, request)
        predicted = time.perf_counter()
        reply = json_reply(predictor.encode_v1(response))
        timers.preprocess.observe(decoded - started)
        timers.predict.observe(predicted - decoded)
        timers.postprocess.observe(time.perf_counter() - predicted)
        return reply

    async def v1_explain(self, name: str, body: bytes) -> Reply:
        entry = await self.repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        request = predictor.decode_v1(v2.parse_json(body))
        started = time.perf_counter()
        result = await self.pool.run(predictor.explain, request)
        self.timers_for(name).explain.observe(time.perf_counter() - started)
        return json_reply(result)

    def _models_changed(self, repository: ModelRepository) -> None:
        """Drop batchers of unloaded predictors and update the loaded-models gauge."""
        live = {
            id(entry.predictor)
            for model in repository.models.values()
            for entry in model.versions.values()
            if entry.predictor is not None
        }
        for key in list(self.batchers):
            if key not in live:
                del self.batchers[key]
        self.metrics.loaded_models.set(len(repository.ready_models()))


def _header_length(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        raise InvalidInput(f"Inference-Header-Content-Length '{shown}' is not an integer") from None
