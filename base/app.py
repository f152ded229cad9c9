"""The REST adapter: KServe V1 and Open Inference Protocol V2 over HTTP, on the data plane.

`create_app` is the only way in. POST inference (V2 infer, V1 predict/explain) is answered
by `ModelportApp` straight from ASGI messages: the hot path of a model server. Every
other route goes through Starlette. Handlers only decode the wire, call the `DataPlane` and
encode its answer; every error becomes `{"error": ...}` in one place (`error_reply`).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from modelport.base import memory, openapi
from modelport.base import metrics as metrics_module
from modelport.base.config import ServerConfig
from modelport.base.connections import CANCELLABLE, GONE
from modelport.base.dataplane import DataPlane, log_failure
from modelport.base.errors import (
    InvalidInput,
    ModelportError,
    Overloaded,
    PayloadTooLarge,
    UnsupportedEncoding,
)
from modelport.base.middleware import (
    ObservabilityMiddleware,
    header,
    internal_error_body,
    unexpected_error,
)
from modelport.base.model import SERVING
from modelport.base.protocol import v2
from modelport.base.repository import ModelRepository

JSON = b"application/json"
_RETRY_AFTER = ((b"retry-after", b"1"),)  # seconds, as the connection cap's 503 says
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

# POST inference paths answered by ModelportApp (path parameters are already %-decoded).
# Matched whole (fullmatch): `$` would also match before a trailing newline (`infer%0A`).
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_V1_VERB = re.compile(r"/v1/models/([^/:]+):(predict|explain)")


class Reply(NamedTuple):
    """An HTTP answer as bytes: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_reply(doc: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(doc, option=_OPTIONS))


def error_reply(exc: ModelportError, where: str) -> Reply:
    """The one place an error becomes an HTTP answer: `{"error": message}` and its status."""
    log_failure(where, exc)
    reply = json_reply({"error": exc.message}, exc.status)
    if isinstance(exc, Overloaded):  # a full queue drains: say when to retry, as a 503 should
        return reply._replace(headers=_RETRY_AFTER)
    return reply


def to_response(reply: Reply) -> Response:
    headers = {key.decode(): value.decode() for key, value in reply.headers}
    return Response(reply.body, reply.status, headers, media_type=reply.content_type.decode())


async def read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`, and
    decompressed when it comes gzip- or deflate-encoded (tritonclient's
    `request_compression_algorithm`), the decoded size held to the same limit."""
    encoding = None
    for key, value in headers:
        if key == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(
                f"request body of {value.decode()} bytes exceeds the {limit} byte limit"
            )
        if key == b"content-encoding":
            encoding = value
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
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return body if encoding is None else decode_content(body, encoding, limit)


# Content-Encoding -> zlib's wbits: gzip framing, or zlib's (HTTP's "deflate").
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate body, decompressed to at most `limit` bytes (a small body may
    expand a thousandfold); other encodings are a 415."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise UnsupportedEncoding(
            f"Content-Encoding '{encoding.decode('latin-1')}' is not supported: send the "
            "body as is, gzip or deflate"
        )
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {name.decode()} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"decompressed request body exceeds the {limit} byte limit")
    if not decoder.eof:
        raise InvalidInput(f"request body is truncated {name.decode()} data")
    return data


def _header_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"inference-header-content-length":
            try:
                return int(value)
            except ValueError:
                shown = value.decode("latin-1")
                raise InvalidInput(
                    f"Inference-Header-Content-Length '{shown}' is not an integer"
                ) from None
    return None


class InferenceRoute(NamedTuple):
    """What an inference path names: the verb, the model, the version."""

    verb: str  # "infer" (V2), "predict" or "explain" (V1)
    model: str
    version: str | None
    protocol: str  # metric label: "v2" or "v1"


def inference_route(path: str) -> InferenceRoute | None:
    """The inference route a path names, or None for every other path."""
    if path.startswith("/v2/"):
        match = _V2_INFER.fullmatch(path)
        return None if match is None else InferenceRoute("infer", match[1], match[2], "v2")
    match = _V1_VERB.fullmatch(path)
    return None if match is None else InferenceRoute(match[2], match[1], None, "v1")


class ModelportApp:
    """The ASGI app. Inference (POST V2 infer, V1 predict and explain) is answered right
    here from ASGI messages, with its observability inline: it is a model server's hot
    path, and every layer it skips (Starlette's routing, Request/Response objects, two
    middleware wrappers of `send`) is microseconds per request. Every other request, and
    the lifespan, goes to the Starlette app behind `ObservabilityMiddleware`.
    """

    _ROUTE_CACHE_SIZE = 1024  # paths come from clients: the cache stays bounded

    def __init__(self, routes_app: Starlette, dataplane: DataPlane) -> None:
        self.routes_app = routes_app
        self.state = routes_app.state
        self.dataplane = dataplane
        self.observed = ObservabilityMiddleware(routes_app, dataplane)
        self.routes: dict[str, InferenceRoute | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            try:
                route = self.routes[path]
            except KeyError:
                route = inference_route(path)
                if len(self.routes) >= self._ROUTE_CACHE_SIZE:
                    self.routes.clear()
                self.routes[path] = route
            if route is not None:
                await self._inference(scope, receive, send, route)
                return
        await self.observed(scope, receive, send)

    async def _inference(
        self, scope: Scope, receive: Receive, send: Send, route: InferenceRoute
    ) -> None:
        started = time.perf_counter()
        dataplane = self.dataplane
        request_id = header(scope, b"x-request-id") or dataplane.new_request_id()
        status = 500
        try:
            try:
                reply = await self._answer(scope, receive, route)
            except ClientDisconnect:
                status = 499  # nobody is left to answer (nginx's code, for the log and metrics)
                return
            except asyncio.CancelledError:
                if not scope.get(GONE):  # a shutdown's cancel: uvicorn's to handle
                    raise
                # The client left while its request waited (connections.py cancelled it).
                status = 499
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return
            except Exception as exc:  # a bug: 500, logged once, and the server keeps serving
                reply = Reply(500, unexpected_error(exc, scope["path"], request_id))
            status = reply.status
            response_headers = [
                (b"content-type", reply.content_type),
                (b"content-length", str(len(reply.body)).encode()),
                (b"x-request-id", request_id.encode("latin-1")),
                *reply.headers,
            ]
            if dataplane.draining:
                response_headers.append((b"connection", b"close"))
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            self.observed.record(
                scope["method"],
                scope["path"],
                route.model,
                route.protocol,
                route.verb,
                status,
                started,
                request_id,
            )

    async def _answer(self, scope: Scope, receive: Receive, route: InferenceRoute) -> Reply:
        if scope["method"] != "POST":
            reply = json_reply(
                {"error": f"method {scope['method']} not allowed for {scope['path']}"}, 405
            )
            return reply._replace(headers=((b"allow", b"POST"),))  # RFC 9110 asks a 405 for it
        dataplane = self.dataplane
        headers = scope["headers"]
        scope[CANCELLABLE] = asyncio.current_task()  # given up if its client leaves
        dataplane.in_flight += 1  # a drain waits for this request (DataPlane.track)
        try:
            body = await read_body(receive, headers, dataplane.config.max_request_size)
            if route.verb == "infer":
                return await self._v2_infer(route.model, route.version, body, headers)
            doc = v2.parse_json(body)
            if route.verb == "predict":
                result = await dataplane.predict_v1(route.model, doc, headers)
            else:
                result = await dataplane.explain_v1(route.model, doc, headers)
            return json_reply(result)
        except ModelportError as exc:
            return error_reply(exc, scope["path"])
        finally:
            dataplane.in_flight -= 1

    async def _v2_infer(
        self, name: str, version: str | None, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Reply:
        dataplane = self.dataplane
        entry = await dataplane.resolve(name, version)  # unknown model: 404 before decoding
        started = time.perf_counter()
        request = v2.decode_request(body, _header_length(headers), dataplane.limits)
        request.raw_headers = headers  # decoded only if the predictor reads them
        decoded = time.perf_counter()
        response = await dataplane.infer_resolved(name, entry, request)
        encoding = time.perf_counter()
        payload, json_length = v2.encode_response(
            response, request, response.model_name, response.model_version
        )
        dataplane.observe_codec(name, decoded - started, time.perf_counter() - encoding)
        if json_length is None:
            return Reply(200, payload)
        return Reply(
            200,
            payload,
            b"application/octet-stream",
            ((b"inference-header-content-length", str(json_length).encode()),),
        )


def _routes(dataplane: DataPlane, config: ServerConfig) -> list[BaseRoute]:
    """Health, metadata, repository and docs: thin calls into the data plane."""

    def reply(doc: Any, status: int = 200) -> Response:
        return to_response(json_reply(doc, status))

    def model_and_version(request: Request) -> tuple[str, str | None]:
        return request.path_params["name"], request.path_params.get("version")

    async def root(request: Request) -> Response:
        return reply({"status": "alive"})

    async def live(request: Request) -> Response:
        return reply({"live": dataplane.live()})

    async def ready(request: Request) -> Response:
        is_ready = await dataplane.ready()
        return reply({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(request: Request) -> Response:
        return reply(dataplane.server_metadata())

    async def list_models(request: Request) -> Response:
        return reply({"models": dataplane.model_names()})

    async def v1_model(request: Request) -> Response:
        name = request.path_params["name"]
        await dataplane.resolve(name)
        return reply({"name": name, "ready": True})

    async def model_metadata(request: Request) -> Response:
        return reply(await dataplane.model_metadata(*model_and_version(request)))

    async def model_ready(request: Request) -> Response:
        name, version = model_and_version(request)
        if await dataplane.model_ready(name, version):
            return reply({"name": name, "ready": True})
        # Loading or evicted: 503 (a retry helps); unloaded: 404 (see errors.ModelUnloaded).
        error = dataplane.repository.not_ready(name, version)
        return reply({"name": name, "ready": False}, error.status if error else 503)

    async def repository_index(request: Request) -> Response:
        # The extension's request body: optional `{"ready": true}` lists READY models only.
        body = await request.body()
        doc = v2.parse_json(body) if body.strip() else {}
        if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
            raise InvalidInput('the index request body is {"ready": true|false} or empty')
        return reply(dataplane.repository_index(ready_only=doc.get("ready", False)))

    async def repository_load(request: Request) -> Response:
        name = request.path_params["name"]
        await dataplane.load(name)
        return reply({"name": name, "load": True})

    async def repository_unload(request: Request) -> Response:
        name = request.path_params["name"]
        await dataplane.unload(name)
        return reply({"name": name, "unload": True})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics_module.render()
        return Response(body, headers={"Content-Type": content_type})

    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/metrics", metrics_endpoint),
        Route("/v1/models", list_models),
        Route("/v1/models/{name}", v1_model),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", list_models),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
    ]
    if config.enable_model_repository:
        routes += [
            Route("/v2/repository/index", repository_index, methods=["GET", "POST"]),
            Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        ]
    if config.enable_docs_url:
        routes += openapi.routes(config)
    return routes


def create_app(
    config: ServerConfig, repository: ModelRepository, dataplane: DataPlane | None = None
) -> ModelportApp:
    """Build the ASGI app over `dataplane` (one is made when not given). Models load at
    startup (lifespan) unless already loaded."""
    plane = dataplane or DataPlane(config, repository)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not repository.models:
            repository.discover()
        if not repository.ready_models():
            await repository.load_all()
        plane.metrics.loaded_models.set(len(repository.ready_models()))
        memory.settle()  # the loaded models' objects leave the collector's scans
        SERVING.set()  # background work after loads (acceleration) may begin
        yield
        plane.shutdown()

    app = Starlette(
        routes=_routes(plane, config),
        lifespan=lifespan,
        exception_handlers={
            ModelportError: _modelport_error,
            HTTPException: _http_error,
            # Starlette answers a bug itself (text/plain) before re-raising it to
            # ObservabilityMiddleware, which logs it: this makes that answer JSON too.
            Exception: _server_error,
        },
    )
    app.state.dataplane = plane
    return ModelportApp(app, plane)


async def _modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelportError)
    return to_response(error_reply(exc, request.url.path))


async def _server_error(request: Request, exc: Exception) -> Response:
    return Response(internal_error_body(exc), 500, media_type=JSON.decode())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    response = to_response(json_reply({"error": message}, exc.status_code))
    if exc.headers:  # Starlette's 405 names the allowed methods (`Allow`), as RFC 9110 wants
        response.headers.update(exc.headers)
    return response
