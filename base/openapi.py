"""The REST API describing itself: `/openapi.json` and a Swagger UI at `/docs`.

The document covers KServe's V1 routes, the Open Inference Protocol's V2 routes and the
model repository extension, with the OIP's request and response shapes. The Swagger UI's
assets come from the `swagger-ui-bundle` package and are served by the server itself:
clusters are often offline, so no page may load from a CDN.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelport.base.config import ServerConfig
from modelport.base.datatypes import TO_NUMPY

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    "400": _json("Error", "the request is malformed (the message names the problem)"),
    "404": _json("Error", "unknown model or version"),
    "503": _json("Error", "the model is not ready (loading) or the server is draining"),
}

# Every OIP datatype: numpy-backed ones, and BF16 (binary only).
_DATATYPES = [*TO_NUMPY, "BF16"]
_TENSOR_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "format": "int64"}},
    "datatype": {"type": "string", "enum": _DATATYPES},
    "parameters": _ref("Parameters"),
    "data": {"$ref": _REF + "TensorData"},
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
    "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "ModelReady": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "Models": {
        "type": "object",
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
    },
    "V1Request": {
        "type": "object",
        "description": "KServe V1: rows of numbers, or of objects with named fields",
        "properties": {"instances": {"type": "array", "items": {}}},
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
            "required": ["name", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
    },
}


def _get(summary: str, schema: str, tag: str, errors: bool = False) -> dict[str, Any]:
    responses = {"200": _json(schema)}
    if errors:
        responses.update(_ERRORS)
    return {"get": {"summary": summary, "tags": [tag], "responses": responses}}


def _post(
    summary: str, request: str | None, response: str, tag: str, binary: bool = False
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {"200": _json(response), **_ERRORS},
    }
    if request is not None:
        content: dict[str, Any] = {"application/json": {"schema": _ref(request)}}
        if binary:
            content["application/octet-stream"] = {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor extension: JSON header of "
                "Inference-Header-Content-Length bytes, then raw tensors",
            }
        operation["requestBody"] = {"required": True, "content": content}
    return {"post": operation}


def _name(param: str = "name") -> dict[str, Any]:
    return {"name": param, "in": "path", "required": True, "schema": {"type": "string"}}


def document(config: ServerConfig) -> dict[str, Any]:
    """The OpenAPI 3.0 document of this server's REST routes."""
    from modelport.base.dataplane import SERVER_NAME, SERVER_VERSION

    v2_model = {
        "/v2/models/{name}": _get("Model metadata", "ModelMetadata", "V2", True),
        "/v2/models/{name}/ready": _get("Model readiness", "ModelReady", "V2", True),
        "/v2/models/{name}/infer": _post(
            "Inference", "InferenceRequest", "InferenceResponse", "V2", binary=True
        ),
    }
    paths: dict[str, Any] = {
        "/v2/health/live": _get("Server liveness", "Live", "V2"),
        "/v2/health/ready": _get("Server readiness", "Ready", "V2"),
        "/v2": _get("Server metadata", "ServerMetadata", "V2"),
        "/v2/models": _get("Ready models", "Models", "V2"),
        **v2_model,
        **{
            path.replace("{name}", "{name}/versions/{version}"): item
            for path, item in v2_model.items()
        },
        "/v1/models": _get("Ready models", "Models", "V1"),
        "/v1/models/{name}": _get("Model readiness", "ModelReady", "V1", True),
        "/v1/models/{name}:predict": _post("Prediction", "V1Request", "V1Response", "V1"),
        "/v1/models/{name}:explain": _post("Explanation", "V1Request", "V1Explanation", "V1"),
    }
    if config.enable_model_repository:
        paths["/v2/repository/index"] = _post("Repository index", None, "RepositoryIndex", "repo")
        paths["/v2/repository/models/{name}/load"] = _post("Load a model", None, "Ready", "repo")
        paths["/v2/repository/models/{name}/unload"] = _post("Unload", None, "Ready", "repo")
    for path, item in paths.items():
        names = [part[1:-1] for part in path.replace(":", "/").split("/") if part.startswith("{")]
        for operation in item.values():
            operation["parameters"] = [_name(n) for n in names]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{SERVER_NAME} model server",
            "version": SERVER_VERSION,
            "description": "KServe V1 and Open Inference Protocol V2 (REST). The same "
            "service is offered over gRPC (inference.GRPCInferenceService).",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
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
