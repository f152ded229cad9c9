"""The REST API describing itself: `/openapi.json` and a Swagger UI at `/docs`.

The document covers KServe's V1 routes, the Open Inference Protocol's V2 routes and the
model repository extension, with the OIP's request and response shapes and every answer
each route gives (its errors, binary inference answers, the 503s of readiness), held to
the server's real answers by tests/test_openapi.py. The Swagger UI's assets come from the
`swagger-ui-bundle` package and are served by the server itself: clusters are often
offline, so no page may load from a CDN.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelport.base.config import ServerConfig
from modelport.base.datatypes import TO_NUMPY

_REF = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_HEADER_LENGTH = "Inference-Header-Content-Length"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _either(*names: str) -> dict[str, Any]:
    """A body that is one of several shapes (anyOf: the shapes may overlap)."""
    return {"anyOf": [_ref(name) for name in names]}


# Error answers, each `{"error": "..."}` (errors.STATUS_CODES is the one table behind them).
RESPONSES: dict[str, Any] = {
    code: _json(_ref("Error"), description)
    for code, description in {
        "400": "the request is malformed or inconsistent (the message names the problem)",
        "404": "unknown model or version, or a model unloaded through the repository API "
        "(or whose load failed)",
        "413": "the request body exceeds --max_request_size",
        "415": "the body's Content-Encoding is not one the server decodes (gzip, deflate, "
        "identity)",
        "431": "the request line and headers exceed --max_request_header_size (the "
        "connection is then closed)",
        "500": "a fault of the model or the server (the message names it, never a traceback)",
        "501": "not offered by this model (no explainer; an explainer asked to explain "
        "integer or text outputs)",
        "502": "a transformer's or explainer's predictor is down, refused the connection, "
        "redirected or gave an answer no client could use",
        "503": "a retry helps: the model is loading, unloading or evicted, its queue is "
        "full, the server is draining, or the worker is over --max_connections "
        "(then with Retry-After and Connection: close)",
        "504": "the request's work exceeded --request_timeout (or a transformer's "
        "--predictor_request_timeout_seconds)",
    }.items()
}

# Every OIP datatype: numpy-backed ones, and BF16 (binary only).
_DATATYPES = [*TO_NUMPY, "BF16"]
_TENSOR_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "format": "int64"}},
    "datatype": {"type": "string", "enum": _DATATYPES},
    "parameters": _ref("Parameters"),
    "data": _ref("TensorData"),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Parameters": {"type": "object", "additionalProperties": True},
    "TensorData": {
        "description": "row-major data, flat or nested; omitted when sent as binary",
        "type": "array",
        "items": {},
    },
    "RequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": _TENSOR_PROPERTIES,
    },
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "inputs": {"type": "array", "items": _ref("RequestInput")},
            "outputs": {"type": "array", "items": _ref("RequestOutput")},
        },
    },
    "ResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": _TENSOR_PROPERTIES,
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "outputs": {"type": "array", "items": _ref("ResponseOutput")},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "format": "int64"}},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "parameters": _ref("Parameters"),
        },
    },
    "Alive": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["alive"]}},
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}},
    },
    "ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "Models": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
    },
    "V1Request": {
        "type": "object",
        "description": "KServe V1: rows of numbers, or of objects with named fields, as "
        "`instances` (or `inputs`)",
        "properties": {
            "instances": {"type": "array", "items": {}},
            "inputs": {"type": "array", "items": {}},
        },
    },
    "V1Response": {
        "type": "object",
        "properties": {"predictions": {"type": "array", "items": {}}},
    },
    "V1Explanation": {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": {}},
            "explanations": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "state", "reason"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {
                    "type": "string",
                    "enum": ["READY", "LOADING", "UNLOADING", "UNAVAILABLE"],
                },
                "reason": {"type": "string"},
            },
        },
    },
    "RepositoryLoad": {
        "type": "object",
        "required": ["name", "load"],
        "properties": {"name": {"type": "string"}, "load": {"type": "boolean"}},
    },
    "RepositoryUnload": {
        "type": "object",
        "required": ["name", "unload"],
        "properties": {"name": {"type": "string"}, "unload": {"type": "boolean"}},
    },
}


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
    model_ready_body = _either("ModelReady", "Error")
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
                _json(_ref("ModelMetadata")),
                ("404", "503"),
            )
        },
        prefix + "/ready": {
            "get": _operation(
                f"model{suffix}Ready",
                "Model readiness",
                "V2",
                _json(_ref("ModelReady"), "ready: `{name, ready: true}`"),
                responses={
                    "404": _json(
                        model_ready_body,
                        "unloaded through the repository API, or its load failed: `{name, "
                        "ready: false}`; unknown model or version: `{error}`",
                    ),
                    "503": _json(
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
                        "application/json": {"schema": _ref("InferenceResponse")},
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
                        "application/json": {"schema": _ref("InferenceRequest")},
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
        return _operation(operation_id, summary, tag, _json(_ref(schema)), ("503",))

    def v1(verb: str, summary: str, response: str, errors: tuple[str, ...]) -> dict[str, Any]:
        return {
            "post": _operation(
                verb,
                summary,
                "V1",
                _json(_ref(response)),
                errors,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("V1Request")}},
                },
            )
        }

    paths: dict[str, Any] = {
        "/": {"get": _operation("root", "Alive", "health", _json(_ref("Alive")))},
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
            "get": _operation("serverLive", "Server liveness", "V2", _json(_ref("Live")))
        },
        "/v2/health/ready": {
            "get": _operation(
                "serverReady",
                "Server readiness",
                "V2",
                _json(_ref("Ready"), "ready: `{ready: true}`"),
                responses={
                    "503": _json(
                        _ref("Ready"),
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
                _json(_ref("ModelReady"), "ready: `{name, ready: true}`"),
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
            return _json(_ref("RepositoryIndex"), "every known model version and its state")

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
                _json(_ref("RepositoryLoad"), "loaded: `{name, load: true}`"),
                ("400", "404", "503"),
                responses={
                    "500": _json(_ref("Error"), "a version failed to load (the message says why)")
                },
            )
        }
        paths["/v2/repository/models/{name}/unload"] = {
            "post": _operation(
                "repositoryUnload",
                "Unload a model",
                "repo",
                _json(_ref("RepositoryUnload"), "unloaded: `{name, unload: true}`"),
                ("404", "503"),
            )
        }
    if config.enable_docs_url:
        paths["/openapi.json"] = {
            "get": _operation(
                "openapi",
                "This document",
                "docs",
                _json({"type": "object"}, "the OpenAPI document"),
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
