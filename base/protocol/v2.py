"""Open Inference Protocol (V2) over REST: JSON tensors and Triton's binary tensor extension.

A request body is a JSON header optionally followed by raw tensor bytes; the split point is
the `Inference-Header-Content-Length` header. Inputs whose parameters carry
`binary_data_size` take their bytes from that tail in order; the others carry `data` in JSON.
Responses mirror it: outputs asked for with `binary_data` (or the request-level
`binary_data_output`) are appended as raw bytes after the JSON header.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelport.base.datatypes import BINARY_ONLY, TO_NUMPY, to_numpy
from modelport.base.errors import (
    NO_OUTPUTS,
    InferenceFailed,
    InvalidInput,
)
from modelport.base.messages import InferRequest, InferResponse, RequestedOutput, Tensor
from modelport.base.protocol import json_tensors

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# The parameter naming a tensor's region in Triton's shared memory extensions.
SHARED_MEMORY = "shared_memory_region"

# numpy's limit on dimensions.
MAX_RANK = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps checked before anything large is allocated."""

    max_inputs: int = 128
    max_tensor_elements: int = 64 * 1024 * 1024


def flag(value: Any) -> bool:
    """A boolean parameter as the OIP allows it: a JSON boolean, or "true"/"false" text."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def parse_json(raw: bytes | memoryview, what: str = "request body") -> Any:
    """orjson.loads with the client's mistake reported as a 400 naming the position."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def check_shape(name: str, shape: Any, limits: Limits) -> tuple[int, ...]:
    """A client's shape, checked before anything is allocated: rank, and the product of
    the non-zero dimensions against the element cap, so an empty shape such as
    `[2**63, 0]` cannot overflow numpy's size arithmetic in `reshape`."""
    if type(shape) is not list:
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:  # bool is not int here, as JSON means it
            raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"input '{name}': shape has {len(shape)} dimensions (at most {MAX_RANK})"
        )
    cap = limits.max_tensor_elements
    if math.prod(dim for dim in shape if dim) > cap:
        if 0 in shape:
            raise InvalidInput(
                f"input '{name}': shape {shape} is too large: its non-zero dimensions "
                f"multiply past {cap} elements"
            )
        raise InvalidInput(f"input '{name}': shape {shape} has more than {cap} elements")
    return tuple(shape)


def decode_binary(name: str, datatype: str, shape: tuple[int, ...], raw: memoryview) -> np.ndarray:
    """Raw little-endian tensor bytes (REST binary extension, gRPC raw contents) as an array
    (zero-copy), or BYTES elements split."""
    if datatype == "BYTES":
        return deserialize_bytes(raw, name, math.prod(shape)).reshape(shape)
    dtype = BINARY_ONLY.get(datatype) or to_numpy(datatype)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype} needs {expected} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    if dtype.kind == "b" and expected and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        # numpy would take any byte as a bool whose value then depends on the operation.
        raise InvalidInput(f"input '{name}': BOOL bytes must be 0 or 1")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def check_unique_names(inputs: list[Tensor]) -> None:
    """Two inputs of one name would silently shadow each other (as Triton, refused)."""
    twice = _repeated([tensor.name for tensor in inputs])
    if twice is not None:
        raise InvalidInput(f"input '{twice}' is given more than once")


def _repeated(names: list[str]) -> str | None:
    """The first name that comes again, if any (a set first: the usual case has none)."""
    if len(names) < 2 or len(set(names)) == len(names):
        return None
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("unreachable: the set found a repeat")


def deserialize_bytes(raw: memoryview | bytes, name: str, count: int) -> np.ndarray:
    """Split Triton's BYTES encoding (4-byte little-endian length, then the bytes) into
    the `count` elements of the input's shape.

    Bytes past them are refused before they are built, not after: five bytes on the wire
    become ~50 of Python objects each.
    """
    items: list[bytes] = []
    append, unpack = items.append, _LENGTH.unpack_from  # the hot loop's lookups, once
    offset, end = 0, len(raw)
    for _ in itertools.repeat(None, count):
        if offset + 4 > end:
            if offset == end:
                raise InvalidInput(
                    f"input '{name}': shape needs {count} BYTES elements, binary data has "
                    f"{len(items)}"
                )
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = unpack(raw, offset)
        offset += 4
        stop = offset + length
        if stop > end:
            raise InvalidInput(f"input '{name}': BYTES element overruns binary_data_size")
        append(bytes(raw[offset:stop]))
        offset = stop
    if offset < end:
        raise InvalidInput(
            f"input '{name}': binary data holds more BYTES elements than the {count} of its "
            f"shape ({end - offset} bytes left over)"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES encoding of an object/str/bytes array, row-major (`reshape(-1)`:
    `.flat` stops at 32 dimensions)."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        encoded = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def decode_request(body: bytes, header_length: int | None, limits: Limits) -> InferRequest:
    """Decode a V2 infer body (JSON, or JSON header + binary tail) into an InferRequest.

    `header_length` None or 0 means the whole body is JSON, as Triton reads a zero
    Inference-Header-Content-Length (no JSON header is empty)."""
    if not header_length:
        header_length = None
        header: bytes | memoryview = body
        tail = memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body "
                f"({len(body)} bytes)"
            )
        view = memoryview(body)
        header, tail = view[:header_length], view[header_length:]
    try:
        doc = parse_json(header)
    except InvalidInput:
        if header_length is None and _json_then_more(body):
            raise InvalidInput(
                "request body has data after its JSON document: binary tensor data needs the "
                "Inference-Header-Content-Length header (the length of the JSON)"
            ) from None
        raise
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    if len(raw_inputs) > limits.max_inputs:
        raise InvalidInput(f"too many inputs: {len(raw_inputs)} > {limits.max_inputs}")
    inputs: list[Tensor] = []
    offset = 0
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInput(f"input {index} must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"input {index}: missing 'name'")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidInput(f"input '{name}': missing 'datatype'")
        if datatype not in TO_NUMPY and datatype not in BINARY_ONLY:
            to_numpy(datatype)  # raises the uniform unsupported-datatype error
        if "shape" not in item:
            raise InvalidInput(f"input '{name}': missing 'shape'")
        shape = check_shape(name, item["shape"], limits)
        parameters = item.get("parameters")
        parameters = (
            {} if parameters is None else _as_dict(parameters, f"input '{name}': 'parameters'")
        )
        if parameters:
            check_shared_memory("input", name, parameters)
        size = parameters.get("binary_data_size") if parameters else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(tail):  # not a bool
                raise InvalidInput(_bad_binary_size(name, size, len(tail) - offset))
            data = decode_binary(name, datatype, shape, tail[offset : offset + size])
            offset += size
        elif "data" in item:
            data = json_tensors.from_json(name, datatype, shape, item["data"])
        else:
            raise InvalidInput(f"input '{name}': missing 'data' (or binary_data_size)")
        inputs.append(Tensor(name, data, datatype, parameters))
    if offset != len(tail):
        raise InvalidInput(f"{len(tail) - offset} bytes of binary data not claimed by any input")
    check_unique_names(inputs)
    outputs = _requested_outputs(doc.get("outputs"), limits)
    request_id = doc.get("id")
    if request_id is not None and type(request_id) not in (str, int, float):
        # A number reads as its text (clients that count their requests); an object, an
        # array or a boolean is no identifier and would come back mangled.
        raise InvalidInput("'id' must be a string")
    return InferRequest(
        inputs=inputs,
        id=None if request_id is None else str(request_id),
        parameters=_as_dict(doc.get("parameters"), "'parameters'"),
        outputs=outputs,
    )


def _json_then_more(body: bytes) -> bool:
    """Whether an unparsable body is a JSON document followed by more (binary tensor data
    sent without its header length); only on the error path, so the slow parser is fine."""
    text = body.decode(errors="replace").lstrip()  # the binary tail need not be UTF-8
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):  # nested deeper than orjson allows: no document
        return False
    return end < len(text)


def _bad_binary_size(name: str, size: Any, left: int) -> str:
    """Why an input's `binary_data_size` is refused: not a byte count, or past the data."""
    if type(size) is not int or size < 0:
        return (
            f"input '{name}': binary_data_size {size!r} is not a byte count: it must be a "
            "non-negative integer"
        )
    return (
        f"input '{name}': binary_data_size {size} exceeds the binary data sent: only {left} "
        "bytes are left after the JSON header and the inputs before it"
    )


def _requested_outputs(raw: Any, limits: Limits) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    if len(raw) > limits.max_inputs:
        raise InvalidInput(f"too many requested outputs: {len(raw)} > {limits.max_inputs}")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each requested output needs a 'name'")
        parameters = _as_dict(item.get("parameters"), "output parameters")
        check_classification(item["name"], parameters)
        check_shared_memory("output", item["name"], parameters)
        outputs.append(RequestedOutput(item["name"], parameters))
    check_unique_outputs(outputs)
    return outputs


def check_unique_outputs(outputs: list[RequestedOutput]) -> None:
    """An output asked for twice would be answered twice (as Triton, refused)."""
    twice = _repeated([output.name for output in outputs])
    if twice is not None:
        raise InvalidInput(f"output '{twice}' is requested more than once")


def check_classification(name: str, parameters: dict[str, Any]) -> None:
    """Triton's classification extension (`class_count` in its clients) answers top-k
    "score:index" strings in place of the tensor; modelport does not offer it (nor lists
    it among its extensions), so asking for it is refused rather than silently ignored."""
    count = parameters.get("classification")
    if count not in (None, 0, False):
        raise InvalidInput(
            f"output '{name}': the classification extension (class_count) is not supported; "
            "ask for the output itself (e.g. predict_proba) and rank it on the client"
        )


def check_shared_memory(kind: str, name: str, parameters: dict[str, Any]) -> None:
    """Triton's shared memory extensions carry a tensor in a registered region named by
    `shared_memory_region`; modelport registers none, so naming one is refused (Triton
    refuses an unknown region) rather than ignored: an ignored output region is never
    written, and the client would read whatever it held."""
    if SHARED_MEMORY in parameters:
        raise InvalidInput(
            f"{kind} '{name}': shared memory region '{parameters[SHARED_MEMORY]}' is not supported "
            "(modelport has no shared memory extension): send and receive tensors in the "
            "request and the answer"
        )


def encode_response(
    response: InferResponse,
    request: InferRequest,
    model_name: str,
    model_version: str | None,
) -> tuple[bytes, int | None]:
    """Encode outputs as JSON, appending binary ones; returns (body, json header length)."""
    if not response.outputs:
        raise InferenceFailed(NO_OUTPUTS)
    binary_default = flag(request.parameters.get("binary_data_output", False))
    wants = {output.name: output.parameters for output in request.outputs}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        binary = flag(wants.get(tensor.name, {}).get("binary_data", binary_default))
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        parameters = dict(tensor.parameters)
        if binary:
            blob = encode_binary(tensor)
            parameters["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            # One the model copied from a binary input would send clients looking for bytes.
            parameters.pop("binary_data_size", None)
            entry["data"] = json_tensors.to_json(tensor)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request.id is not None:
        doc["id"] = request.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_JSON_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def encode_binary(tensor: Tensor) -> bytes:
    """A tensor as raw little-endian bytes (BYTES: length-prefixed elements)."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data).astype(tensor.data.dtype.newbyteorder("<")).tobytes()
