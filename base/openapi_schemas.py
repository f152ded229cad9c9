"""The shapes `/openapi.json` describes: the OIP's and KServe V1's request and response
bodies as JSON Schema (`SCHEMAS`), and the shared error answers (`RESPONSES`).

Data only; base/openapi.py assembles the routes' operations from it.
"""

from __future__ import annotations

from typing import Any

from modelport.base.datatypes import TO_NUMPY

REF = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def json_body(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def either(*names: str) -> dict[str, Any]:
    """A body that is one of several shapes (anyOf: the shapes may overlap)."""
    return {"anyOf": [ref(name) for name in names]}


# Error answers, each `{"error": "..."}` (errors.STATUS_CODES is the one table behind them).
RESPONSES: dict[str, Any] = {
    code: json_body(ref("Error"), description)
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
    "parameters": ref("Parameters"),
    "data": ref("TensorData"),
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
        "properties": {"name": {"type": "string"}, "parameters": ref("Parameters")},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": ref("Parameters"),
            "inputs": {"type": "array", "items": ref("RequestInput")},
            "outputs": {"type": "array", "items": ref("RequestOutput")},
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
            "parameters": ref("Parameters"),
            "outputs": {"type": "array", "items": ref("ResponseOutput")},
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
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
            "parameters": ref("Parameters"),
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
