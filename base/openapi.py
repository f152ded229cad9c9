"""The REST API describing itself: `/openapi.json` and a Swagger UI at `/docs`.

The document covers KServe's V1 routes, the Open Inference Protocol's V2 routes and the
model repository extension, with the OIP's request and response shapes and every answer
each route gives (its errors, binary inference answers, the 503s of readiness), held to
the server's real answers by tests/test_openapi.py. The Swagger UI's assets come from the
`swagger-ui-bundle` package and are served by the server itself: clusters are often
offline, so no page may load from a CDN. The shapes themselves (JSON Schema of the bodies,
the shared error answers) are data in base/openapi_schemas.py; this module assembles the
routes' operations, the document and the two routes that serve it.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelport.base.config import ServerConfig
from modelport.base.openapi_schemas import RESPONSES, SCHEMAS, either, json_body, ref

_RESPONSES = "#/components/responses/"
_HEADER_LENGTH = "Inference-Header-Content-Length"


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: dict[str, Any],
    errors: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """An operation answering `ok` (200), the shared error answers `errors`, and 431 and
    500, which any request may get; `extra` adds fields (`requestBody`, `parameters`) and,
    as `responses`, answers of its own that take precedence over the shared ones."""
    responses: dict[str, Any] = {"200": ok}
    for code in sorted({*errors, "431", "500"}):
        responses[code] = {"$ref": _RESPONSES + code}
    responses.update(extra.pop("responses", {}))
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(sorted(responses.items())),
        **extra,
    }


def _path_parameters(path: str) -> list[dict[str, Any]]:
    """One required string parameter per `{name}` in `path` (fresh dicts every call)."""
    names = re.findall(r"\{([^}]+)\}", path)
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


_INFERENCE_ERRORS = ("400", "404", "413", "415", "502", "503", "504")


def _v2_model_paths(prefix: str, suffix: str, versioned: bool) -> dict[str, Any]:
    """Metadata, readiness and inference under `prefix` (a model, or one of its versions):
    new operation dicts each call, so the two sets share nothing."""
    model_ready_body = either("ModelReady", "Error")
    binary_body = (
        f"the binary tensor extension: a JSON InferenceRequest of {_HEADER_LENGTH} bytes, "
        "then the raw bytes of the inputs that declare `binary_data_size` (any Content-Type, "
        "or none)"
    )
    return {
        prefix: {
            "get": _operation(
                f"model{suffix}Metadata",
                "Model metadata",
                "V2",
                json_body(ref("ModelMetadata")),
                ("404", "503"),
            )
        },
        prefix + "/ready": {
            "get": _operation(
                f"model{suffix}Ready",
                "Model readiness",
                "V2",
                json_body(ref("ModelReady"), "ready: `{name, ready: true}`"),
                responses={
                    "404": json_body(
                        model_ready_body,
                        "unloaded through the repository API, or its load failed: `{name, "
                        "ready: false}`; unknown model or version: `{error}`",
                    ),
                    "503": json_body(
                        model_ready_body,
                        "loading, unloading, evicted or its predictor not ready: `{name, "
                        "ready: false}`; the worker over --max_connections: `{error}`",
                    ),
                },
            )
        },
        prefix + "/infer": {
            "post": _operation(
                f"model{suffix}Infer",
                "Inference" + (" with one version" if versioned else ""),
                "V2",
                {
                    "description": "the InferenceResponse as JSON; when binary outputs are "
                    "asked for (`binary_data_output`, or `binary_data` on a requested "
                    f"output), application/octet-stream: its JSON header of {_HEADER_LENGTH} "
                    "bytes, then the raw output tensors",
                    "headers": {
                        _HEADER_LENGTH: {
                            "description": "length of the JSON header (binary answers only)",
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    },
                    "content": {
                        "application/json": {"schema": ref("InferenceResponse")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                (*_INFERENCE_ERRORS, "501"),
                parameters=[
                    {
                        "name": _HEADER_LENGTH,
                        "in": "header",
                        "required": False,
                        "description": "the binary tensor extension: length of the JSON "
                        "header that starts the body",
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                requestBody={
                    "required": True,
                    "description": f"an InferenceRequest as JSON; or {binary_body}",
                    "content": {
                        "application/json": {"schema": ref("InferenceRequest")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
            )
        },
    }


def document(config: ServerConfig) -> dict[str, Any]:
    """The OpenAPI 3.0 document of this server's REST routes (those of `app._routes`)."""
    from modelport.base.dataplane import SERVER_NAME, SERVER_VERSION

    def get(operation_id: str, summary: str, schema: str, tag: str) -> dict[str, Any]:
        return _operation(operation_id, summary, tag, json_body(ref(schema)), ("503",))

    def v1(verb: str, summary: str, response: str, errors: tuple[str, ...]) -> dict[str, Any]:
        return {
            "post": _operation(
                verb,
                summary,
                "V1",
                json_body(ref(response)),
                errors,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": ref("V1Request")}},
                },
            )
        }

    paths: dict[str, Any] = {
        "/": {"get": _operation("root", "Alive", "health", json_body(ref("Alive")))},
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics",
                "health",
                {
                    "description": "the Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                ("503",),
            )
        },
        "/v2/health/live": {
            "get": _operation("serverLive", "Server liveness", "V2", json_body(ref("Live")))
        },
        "/v2/health/ready": {
            "get": _operation(
                "serverReady",
                "Server readiness",
                "V2",
                json_body(ref("Ready"), "ready: `{ready: true}`"),
                responses={
                    "503": json_body(
                        ref("Ready"),
                        "not ready (start-up loads not done, draining, or a predictor "
                        "not ready): `{ready: false}`",
                    )
                },
            )
        },
        "/v2": {"get": get("serverMetadata", "Server metadata", "ServerMetadata", "V2")},
        "/v2/models": {"get": get("v2Models", "Ready models", "Models", "V2")},
        **_v2_model_paths("/v2/models/{name}", "", versioned=False),
        **_v2_model_paths("/v2/models/{name}/versions/{version}", "Version", versioned=True),
        "/v1/models": {"get": get("v1Models", "Ready models", "Models", "V1")},
        "/v1/models/{name}": {
            "get": _operation(
                "v1ModelReady",
                "Model readiness",
                "V1",
                json_body(ref("ModelReady"), "ready: `{name, ready: true}`"),
                ("404", "503"),
            )
        },
        "/v1/models/{name}:predict": v1("predict", "Prediction", "V1Response", _INFERENCE_ERRORS),
        "/v1/models/{name}:explain": v1(
            "explain", "Explanation", "V1Explanation", (*_INFERENCE_ERRORS, "501")
        ),
    }
    if config.enable_model_repository:

        def index() -> dict[str, Any]:
            return json_body(ref("RepositoryIndex"), "every known model version and its state")

        paths["/v2/repository/index"] = {
            "get": _operation("repositoryIndex", "Repository index", "repo", index(), ("503",)),
            "post": _operation(
                "repositoryIndexPost",
                "Repository index (as Triton clients ask; a body is ignored)",
                "repo",
                index(),
                ("503",),
            ),
        }
        paths["/v2/repository/models/{name}/load"] = {
            "post": _operation(
                "repositoryLoad",
                "Load (or reload) a model",
                "repo",
                json_body(ref("RepositoryLoad"), "loaded: `{name, load: true}`"),
                ("400", "404", "503"),
                responses={
                    "500": json_body(
                        ref("Error"), "a version failed to load (the message says why)"
                    )
                },
            )
        }
        paths["/v2/repository/models/{name}/unload"] = {
            "post": _operation(
                "repositoryUnload",
                "Unload a model",
                "repo",
                json_body(ref("RepositoryUnload"), "unloaded: `{name, unload: true}`"),
                ("404", "503"),
            )
        }
    if config.enable_docs_url:
        paths["/openapi.json"] = {
            "get": _operation(
                "openapi",
                "This document",
                "docs",
                json_body({"type": "object"}, "the OpenAPI document"),
                ("503",),
            )
        }
        paths["/docs"] = {
            "get": _operation(
                "docs",
                "Swagger UI (its assets served under /docs/static)",
                "docs",
                {
                    "description": "the page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                ("503",),
            )
        }
    for path, item in paths.items():
        parameters = _path_parameters(path)
        if parameters:
            item["parameters"] = parameters
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{SERVER_NAME} model server",
            "version": SERVER_VERSION,
            "description": "KServe V1 and Open Inference Protocol V2 (REST). The same "
            "service is offered over gRPC (inference.GRPCInferenceService). Every error is "
            '`{"error": "..."}` with the status of one table; besides the answers listed '
            "per operation, a method a path does not serve is a 405 and an unknown path a "
            "404. A request's `X-Request-Id` (or a new one) comes back in every answer.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "responses": RESPONSES},
    }


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelport API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


def routes(config: ServerConfig) -> list[BaseRoute]:
    """`/openapi.json`, `/docs` and the Swagger UI's assets under `/docs/static`."""
    from swagger_ui_bundle import swagger_ui_path

    doc = document(config)

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(doc)

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(_PAGE)

    return [
        Route("/openapi.json", openapi_json),
        Route("/docs", docs),
        Mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui"),
    ]
