"""The client side of V2 REST: encode an InferRequest, decode a predictor's answer.

The server side (`v2.py`) decodes requests and encodes responses; a component that forwards
to a predictor (transformer, explainer) needs the mirror image. Large numeric tensors travel
in the binary tensor extension (no float-to-text round trip); small ones, and text, as JSON so
any V2 server understands them.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelport.base.errors import InvalidInput
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.protocol import json_tensors, v2

# Numeric tensors of at least this many bytes go binary; below it JSON is as cheap and
# readable in logs. Half floats have no JSON form and always go binary.
BINARY_MIN_BYTES = 1024
_ALWAYS_BINARY = ("FP16", "BF16")
# A predictor's answer is trusted more than a client's request, but still bounded.
_RESPONSE_LIMITS = v2.Limits(max_inputs=1 << 16, max_tensor_elements=1 << 40)
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _binary(tensor: Tensor) -> bool:
    if tensor.datatype in _ALWAYS_BINARY:
        return True
    if tensor.datatype == "BYTES":
        return not all(isinstance(item, str) for item in tensor.data.reshape(-1))
    return bool(tensor.data.nbytes >= BINARY_MIN_BYTES)


def encode_request(request: InferRequest, binary_outputs: bool = True) -> tuple[bytes, int | None]:
    """A V2 infer body and its JSON header length (None when all of it is JSON).

    `binary_outputs` asks the predictor for binary outputs unless the request says otherwise:
    decoding them is a zero-copy view instead of a JSON parse.
    """
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in request.inputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        # A size carried over from the request this one was built from is stale.
        parameters = {k: v for k, v in tensor.parameters.items() if k != "binary_data_size"}
        if _binary(tensor):
            blob = v2.encode_binary(tensor)
            parameters["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = json_tensors.to_json(tensor)
        if parameters:
            entry["parameters"] = parameters
        inputs.append(entry)
    doc: dict[str, Any] = {}
    if request.id is not None:
        doc["id"] = request.id
    parameters = dict(request.parameters)
    if binary_outputs and not request.outputs:
        parameters.setdefault("binary_data_output", True)
    if parameters:
        doc["parameters"] = parameters
    doc["inputs"] = inputs
    if request.outputs:
        doc["outputs"] = [
            {"name": output.name, "parameters": _output_parameters(output.parameters, request)}
            for output in request.outputs
        ]
    header = orjson.dumps(doc, option=_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _output_parameters(parameters: dict[str, Any], request: InferRequest) -> dict[str, Any]:
    wanted = dict(parameters)
    wanted.setdefault("binary_data", bool(request.parameters.get("binary_data_output", True)))
    return wanted


def decode_response(body: bytes, header_length: int | None) -> InferResponse:
    """A V2 infer answer (JSON, or JSON header + binary tail) as an InferResponse.

    Raises InvalidInput when the answer is malformed; the caller says whose fault it is.
    """
    if header_length is None:
        header: bytes | memoryview = body
        tail = memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(f"header length {header_length} is outside the body")
        view = memoryview(body)
        header, tail = view[:header_length], view[header_length:]
    doc = v2.parse_json(header, "response body")
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise InvalidInput("response has no 'outputs' list")
    outputs: list[Tensor] = []
    offset = 0
    for item in doc["outputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("an output has no 'name'")
        name, datatype = item["name"], item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidInput(f"output '{name}' has no 'datatype'")
        shape = v2.check_shape(name, item.get("shape"), _RESPONSE_LIMITS)
        parameters = _parameters(item.get("parameters"), f"output '{name}'")
        size = parameters.pop("binary_data_size", None)
        if size is not None:
            # bool is an int to Python, not to JSON: `true` is no byte count.
            bad = isinstance(size, bool) or not isinstance(size, int)
            if bad or size < 0 or offset + size > len(tail):
                raise InvalidInput(f"output '{name}': binary_data_size {size} overruns the body")
            # A copy: the caller may keep the tensor after the body is gone, and may write.
            data = v2.decode_binary(name, datatype, shape, tail[offset : offset + size]).copy()
            offset += size
        elif "data" in item:
            data = json_tensors.from_json(name, datatype, shape, item["data"])
        else:
            raise InvalidInput(f"output '{name}' has neither 'data' nor binary_data_size")
        outputs.append(Tensor(name, data, datatype, parameters))
    response_id = doc.get("id")
    if response_id is not None and not isinstance(response_id, str):
        raise InvalidInput(f"response 'id' must be a string, got {type(response_id).__name__}")
    return InferResponse(
        outputs=outputs,
        id=response_id,
        parameters=_parameters(doc.get("parameters"), "response"),
    )


def _parameters(value: Any, owner: str) -> dict[str, Any]:
    """A `parameters` object as a fresh dict (absent or null: empty); anything but an
    object is a malformed answer, not a TypeError deep in the caller."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{owner} 'parameters' must be an object, got {type(value).__name__}")
    return dict(value)
