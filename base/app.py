"""The HTTP app: KServe V1 and Open Inference Protocol V2 routes over one ModelRepository.

`create_app` is the only way in: it wires the routes, the error mapping (every error body is
`{"error": ...}`, never FastAPI's 422 `{"detail": ...}`) and the observability middleware.
Handlers decode with `modelport.base.protocol`, call the predictor in a bounded thread pool
(or through the adaptive batcher) and encode; they never see framework objects.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.base import metrics as metrics_module
from modelport.base.config import ServerConfig
from modelport.base.errors import ModelportError, NotAvailable, PayloadTooLarge
from modelport.base.middleware import ObservabilityMiddleware
from modelport.base.model import SERVING
from modelport.base.repository import ModelRepository, State
from modelport.base.service import Reply, ServerState, json_reply

log = logging.getLogger("modelport.server")

SERVER_NAME = "modelport"
SERVER_VERSION = "0.1.0"

# POST inference paths answered by the fast path (path parameters are already %-decoded).
_V2_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_V1_VERB = re.compile(r"^/v1/models/([^/:]+):(predict|explain)$")


def to_response(reply: Reply) -> Response:
    headers = {key.decode(): value.decode() for key, value in reply.headers}
    return Response(reply.body, reply.status, headers, media_type=reply.content_type.decode())


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


async def read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`."""
    for key, value in headers:
        if key == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(
                f"request body of {value.decode()} bytes exceeds the {limit} byte limit"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class InferenceFastPath:
    """POST inference answered straight from ASGI messages, skipping Starlette's routing,
    Request and Response objects: the hot path of a model server. Everything else, and
    every other method on these paths, goes on to the Starlette app."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            v2_match = _V2_INFER.match(path) if path.startswith("/v2/") else None
            v1_match = _V1_VERB.match(path) if v2_match is None else None
            if v2_match or v1_match:
                try:
                    reply = await self._answer(scope, receive, v2_match, v1_match)
                except ClientDisconnect:
                    return  # nobody is left to answer
                headers = [(b"content-type", reply.content_type), *reply.headers]
                await send(
                    {"type": "http.response.start", "status": reply.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": reply.body})
                return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        v2_match: re.Match[str] | None,
        v1_match: re.Match[str] | None,
    ) -> Reply:
        state = self.state
        headers = scope["headers"]
        try:
            body = await read_body(receive, headers, state.config.max_request_size)
            if v2_match is not None:
                length = _header(headers, b"inference-header-content-length")
                return await state.v2_infer(v2_match[1], v2_match[2], body, length)
            assert v1_match is not None
            if v1_match[2] == "predict":
                return await state.v1_predict(v1_match[1], body)
            return await state.v1_explain(v1_match[1], body)
        except ModelportError as exc:
            log_model_error(scope["path"], exc)
            return error_reply(exc.status, exc.message)


def log_model_error(path: str, exc: ModelportError) -> None:
    """Server-side faults are logged once, without a traceback; client errors are not."""
    if exc.status >= 500 and not isinstance(exc, NotAvailable):
        log.warning("request failed", extra={"path": path, "error": exc.message})


def create_app(config: ServerConfig, repository: ModelRepository) -> Starlette:
    """Build the ASGI app. Models load at startup (lifespan) unless already loaded."""
    state = ServerState(config, repository)

    def json_response(doc: Any, status: int = 200) -> Response:
        return to_response(json_reply(doc, status))

    async def body_of(request: Request) -> bytes:
        return await read_body(request.receive, request.scope["headers"], config.max_request_size)

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

    async def list_models(request: Request) -> Response:
        return json_response({"models": repository.ready_models()})

    async def v1_model(request: Request) -> Response:
        name = request.path_params["name"]
        await repository.predictor(name)
        return json_response({"name": name, "ready": True})

    async def model_metadata(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        predictor = (await repository.predictor(name, version)).predictor
        assert predictor is not None
        versions = [key for key in repository.models[name].versions if key is not None]
        doc = {
            "name": name,
            "versions": versions,
            "platform": predictor.runtime,
            "inputs": [spec.to_dict() for spec in predictor.inputs()],
            "outputs": [spec.to_dict() for spec in predictor.outputs()],
        }
        if parameters := predictor.parameters():
            doc["parameters"] = parameters
        return json_response(doc)

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        is_ready = repository.version(name, version).state is State.READY
        return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    # --- inference (normally answered by the fast path; kept for completeness) ----------

    async def v2_infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        length = request.headers.get("inference-header-content-length")
        return to_response(await state.v2_infer(name, version, await body_of(request), length))

    async def v1_predict(request: Request) -> Response:
        return to_response(
            await state.v1_predict(request.path_params["name"], await body_of(request))
        )

    async def v1_explain(request: Request) -> Response:
        return to_response(
            await state.v1_explain(request.path_params["name"], await body_of(request))
        )

    # --- model repository extension -----------------------------------------------------

    async def repository_index(request: Request) -> Response:
        return json_response(repository.index())

    async def repository_load(request: Request) -> Response:
        name = request.path_params["name"]
        await repository.load(name)
        entry = repository.version(name)
        if entry.state is not State.READY:
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
        Route("/v1/models", list_models),
        Route("/v1/models/{name}:predict", v1_predict, methods=["POST"]),
        Route("/v1/models/{name}:explain", v1_explain, methods=["POST"]),
        Route("/v1/models/{name}", v1_model),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", list_models),
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
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not repository.models:
            repository.discover()
        if not repository.ready_models():
            await repository.load_all()
        state.metrics.loaded_models.set(len(repository.ready_models()))
        SERVING.set()  # background work after loads (acceleration) may begin
        yield
        state.pool.shutdown()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ModelportError: _modelport_error, HTTPException: _http_error},
    )
    app.state.server = state
    # Outermost first: observability sees every request, the fast path the POST inference.
    app.add_middleware(InferenceFastPath, state=state)
    app.add_middleware(ObservabilityMiddleware, state=state)
    return app


async def _modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelportError)
    log_model_error(request.url.path, exc)
    return to_response(error_reply(exc.status, exc.message))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    return to_response(error_reply(exc.status_code, message))
