"""The HTTP app: KServe V1 and Open Inference Protocol V2 routes over one ModelRepository.

`create_app` is the only way in: it wires the routes, the error mapping (every error body is
`{"error": ...}`, never FastAPI's 422 `{"detail": ...}`) and the observability middleware.
Handlers decode with `modelport.base.protocol`, call the predictor in a bounded thread pool
(or through the adaptive batcher) and encode; they never see framework objects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import orjson
from modelport.base import metrics as metrics_module
from modelport.base.batching import Batcher
from modelport.base.config import ServerConfig
from modelport.base.errors import InvalidInput, ModelportError, NotAvailable, PayloadTooLarge
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.middleware import ObservabilityMiddleware
from modelport.base.protocol import v2
from modelport.base.repository import ModelRepository, ModelVersion
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("modelport.server")

SERVER_NAME = "modelport"
SERVER_VERSION = "0.1.0"
_JSON = "application/json"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc, option=_OPTIONS), status, headers, media_type=_JSON)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


class ServerState:
    """What the handlers share: config, models, the predict pool, batchers, drain flag."""

    def __init__(self, config: ServerConfig, repository: ModelRepository) -> None:
        self.config = config
        self.repository = repository
        self.limits = v2.Limits(config.max_inputs, config.max_tensor_elements)
        self.executor = ThreadPoolExecutor(config.predict_threads, thread_name_prefix="predict")
        self.batchers: dict[int, Batcher] = {}
        self.metrics = metrics_module.process_metrics()
        self.draining = False
        self.in_flight = 0

    async def infer(self, entry: ModelVersion, request: InferRequest) -> InferResponse:
        """Run a blocking predict off the event loop, batched when the model asks for it."""
        predictor = entry.predictor
        assert predictor is not None
        settings = entry.settings
        started = time.perf_counter()
        if settings.max_batch_size > 1:
            batcher = self.batchers.get(id(predictor))
            if batcher is None:
                batcher = Batcher(predictor, self.executor, settings)
                self.batchers[id(predictor)] = batcher
            response = await batcher.submit(request)
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(self.executor, predictor.infer, request)
        self.metrics.predict.labels(settings.name).observe(time.perf_counter() - started)
        return response

    def forget_batchers(self, repository: ModelRepository) -> None:
        """Drop batchers of predictors that are no longer loaded."""
        live = {
            id(entry.predictor)
            for model in repository.models.values()
            for entry in model.versions.values()
            if entry.predictor is not None
        }
        for key in list(self.batchers):
            if key not in live:
                del self.batchers[key]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _header_length(request: Request) -> int | None:
    value = request.headers.get(v2.HEADER_LENGTH)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length '{value}' is not an integer") from None


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(config: ServerConfig, repository: ModelRepository) -> Starlette:
    """Build the ASGI app. Models load at startup (lifespan) unless already loaded."""
    state = ServerState(config, repository)
    repository.on_change.append(state.forget_batchers)
    repository.on_change.append(
        lambda repo: state.metrics.loaded_models.set(len(repo.ready_models()))
    )

    def model_args(request: Request) -> tuple[str, str | None]:
        return request.path_params["name"], request.path_params.get("version")

    # --- health and metadata ----------------------------------------------------------

    async def root(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = not state.draining and repository.all_ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(request: Request) -> Response:
        extensions = ["binary_tensor_data"]
        if config.enable_model_repository:
            extensions.append("model_repository")
        return json_response(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": extensions}
        )

    async def v1_models(request: Request) -> Response:
        return json_response({"models": repository.ready_models()})

    async def v1_model(request: Request) -> Response:
        name = request.path_params["name"]
        await repository.predictor(name)
        return json_response({"name": name, "ready": True})

    async def v2_models(request: Request) -> Response:
        return json_response({"models": repository.ready_models()})

    async def model_metadata(request: Request) -> Response:
        name, version = model_args(request)
        entry = await repository.predictor(name, version)
        model = repository.models[name]
        predictor = entry.predictor
        assert predictor is not None
        versions = [key for key in model.versions if key is not None]
        return json_response(
            {
                "name": name,
                "versions": versions,
                "platform": predictor.runtime,
                "inputs": [spec.to_dict() for spec in predictor.inputs()],
                "outputs": [spec.to_dict() for spec in predictor.outputs()],
            }
        )

    async def model_ready(request: Request) -> Response:
        name, version = model_args(request)
        entry = repository.version(name, version)
        is_ready = entry.state.value == "READY"
        return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    # --- inference ----------------------------------------------------------------------

    async def v2_infer(request: Request) -> Response:
        name, version = model_args(request)
        entry = await repository.predictor(name, version)
        started = time.perf_counter()
        body = await read_body(request, config.max_request_size)
        infer_request = v2.decode_request(body, _header_length(request), state.limits)
        decoded = time.perf_counter()
        state.metrics.preprocess.labels(name).observe(decoded - started)
        response = await state.infer(entry, infer_request)
        encoded_at = time.perf_counter()
        payload, json_length = v2.encode_response(
            response, infer_request, name, entry.settings.version
        )
        state.metrics.postprocess.labels(name).observe(time.perf_counter() - encoded_at)
        if json_length is None:
            return Response(payload, media_type=_JSON)
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    async def v1_predict(request: Request) -> Response:
        name = request.path_params["name"]
        entry = await repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        started = time.perf_counter()
        body = v2.parse_json(await read_body(request, config.max_request_size))
        infer_request = predictor.decode_v1(body)
        state.metrics.preprocess.labels(name).observe(time.perf_counter() - started)
        response = await state.infer(entry, infer_request)
        encoded_at = time.perf_counter()
        result = predictor.encode_v1(response)
        state.metrics.postprocess.labels(name).observe(time.perf_counter() - encoded_at)
        return json_response(result)

    async def v1_explain(request: Request) -> Response:
        name = request.path_params["name"]
        entry = await repository.predictor(name)
        predictor = entry.predictor
        assert predictor is not None
        body = v2.parse_json(await read_body(request, config.max_request_size))
        infer_request = predictor.decode_v1(body)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(state.executor, predictor.explain, infer_request)
        state.metrics.explain.labels(name).observe(time.perf_counter() - started)
        return json_response(result)

    # --- model repository extension -----------------------------------------------------

    async def repository_index(request: Request) -> Response:
        return json_response(repository.index())

    async def repository_load(request: Request) -> Response:
        name = request.path_params["name"]
        await repository.load(name)
        entry = repository.version(name)
        if entry.state.value != "READY":
            raise ModelportError(entry.reason or f"model '{name}' failed to load")
        return json_response({"name": name, "load": True})

    async def repository_unload(request: Request) -> Response:
        name = request.path_params["name"]
        await repository.unload(name)
        return json_response({"name": name, "unload": True})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics_module.render()
        return Response(body, headers={"Content-Type": content_type})

    routes = [
        Route("/", root),
        Route("/metrics", metrics_endpoint),
        Route("/v1/models", v1_models),
        Route("/v1/models/{name}:predict", v1_predict, methods=["POST"]),
        Route("/v1/models/{name}:explain", v1_explain, methods=["POST"]),
        Route("/v1/models/{name}", v1_model),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", v2_models),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
    ]
    if config.enable_model_repository:
        routes += [
            Route("/v2/repository/index", repository_index, methods=["GET", "POST"]),
            Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        ]

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        if not repository.models:
            repository.discover()
        if not repository.ready_models():
            await repository.load_all()
        state.metrics.loaded_models.set(len(repository.ready_models()))
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ModelportError: _modelport_error, HTTPException: _http_error},
    )
    app.state.server = state
    app.add_middleware(ObservabilityMiddleware, state=state)
    return app


async def _modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelportError)
    if exc.status >= 500 and not isinstance(exc, NotAvailable):
        log.warning("request failed", extra={"path": request.url.path, "error": exc.message})
    return error_response(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message)
