"""OIP gRPC messages to and from `InferRequest` / `InferResponse`: the gRPC wire format, in
one place, as `protocol/v2.py` is for REST.

Tensors arrive typed (`contents.<type>_contents`) or raw (`raw_input_contents`, the same
little-endian bytes as REST's binary extension, decoded by the same `v2.decode_binary`).
Answers are raw when the request was raw or asked for binary output (Triton always answers
raw, and tritonclient reads raw), typed otherwise (as KServe does); FP16 and BF16 have no
typed field, so an answer holding one is raw. The OIP allows raw for all outputs or none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelport.base.datatypes import to_numpy
from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput
from modelport.base.grpc import inference_pb2 as pb
from modelport.base.messages import InferRequest, InferResponse, RequestedOutput, Tensor
from modelport.base.protocol import v2

# Datatype -> the typed contents field that carries it.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_RAW_ONLY = ("FP16", "BF16")


def parameters_to_dict(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as plain values (bool, int, str, float)."""
    out: dict[str, Any] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(parameter, which)
    return out


def fill_parameters(target: Any, values: Mapping[str, Any]) -> None:
    """Write plain values into a protobuf parameter map (anything else as a string)."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if value >= 1 << 63:
                parameter.uint64_param = value
            else:
                parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = str(value)


def _shape(name: str, dims: Any, limits: v2.Limits) -> tuple[int, ...]:
    return v2.check_shape(name, list(dims), limits)


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...]) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    if datatype in _RAW_ONLY:
        raise InvalidInput(
            f"input '{name}': {datatype} data is only accepted in raw_input_contents"
        )
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        to_numpy(datatype)  # raises the uniform unsupported-datatype error
        raise InvalidInput(f"input '{name}': unsupported datatype '{datatype}'")
    values = getattr(tensor.contents, field)
    expected = math.prod(shape)  # np.prod costs microseconds on a short tuple
    if len(values) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {expected} elements, "
            f"{field} has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = to_numpy(datatype)
    if dtype.kind in "iu" and dtype.itemsize < 4 and expected:
        wide = np.fromiter(values, dtype=np.int64, count=expected)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.fromiter(values, dtype=dtype, count=expected).reshape(shape)


def decode_request(message: pb.ModelInferRequest, limits: v2.Limits) -> InferRequest:
    """A ModelInferRequest as an InferRequest; client mistakes are InvalidInput (400)."""
    if not message.inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    if len(message.inputs) > limits.max_inputs:
        raise InvalidInput(f"too many inputs: {len(message.inputs)} > {limits.max_inputs}")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs: "
            "send every input raw, or none"
        )
    inputs: list[Tensor] = []
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"input {index}: missing 'name'")
        if not tensor.datatype:
            raise InvalidInput(f"input '{name}': missing 'datatype'")
        shape = _shape(name, tensor.shape, limits)
        parameters = parameters_to_dict(tensor.parameters)
        if parameters:
            v2.check_shared_memory("input", name, parameters)
        if raw:
            if tensor.HasField("contents"):  # as Triton: one or the other, never ignored
                raise InvalidInput(
                    f"input '{name}': has typed contents as well as raw_input_contents; "
                    "send one or the other"
                )
            data = v2.decode_binary(name, tensor.datatype, shape, memoryview(raw[index]))
        else:
            data = _typed(tensor, shape)
        inputs.append(Tensor(name, data, tensor.datatype, parameters))
    v2.check_unique_names(inputs)
    if len(message.outputs) > limits.max_inputs:
        raise InvalidInput(
            f"too many requested outputs: {len(message.outputs)} > {limits.max_inputs}"
        )
    outputs = []
    for output in message.outputs:
        parameters = parameters_to_dict(output.parameters)
        v2.check_classification(output.name, parameters)
        v2.check_shared_memory("output", output.name, parameters)
        outputs.append(RequestedOutput(output.name, parameters))
    v2.check_unique_outputs(outputs)
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=parameters_to_dict(message.parameters),
        outputs=outputs,
    )


def wants_raw(message: pb.ModelInferRequest, request: InferRequest) -> bool:
    """Raw answers for raw requests or when binary output is asked for."""
    if message.raw_input_contents:
        return True
    if v2.flag(request.parameters.get("binary_data_output")):
        return True
    return any(v2.flag(output.parameters.get("binary_data")) for output in request.outputs)


def encode_response(
    response: InferResponse, request_id: str | None, raw: bool
) -> pb.ModelInferResponse:
    """An InferResponse as a ModelInferResponse, raw or typed (see the module docstring).

    The answer carries the request's id, as over REST: not the predictor's `response.id`,
    which a predictor may leave unset and a batched call (merged, then split) never has."""
    if not response.outputs:
        raise InferenceFailed(NO_OUTPUTS)  # as REST answers it: the model's fault
    raw = raw or any(tensor.datatype in _RAW_ONLY for tensor in response.outputs)
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=request_id or "",
    )
    if response.parameters:
        fill_parameters(message.parameters, response.parameters)
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            fill_parameters(output.parameters, tensor.parameters)
        if raw:
            message.raw_output_contents.append(v2.encode_binary(tensor))
            continue
        field = CONTENTS_FIELD[tensor.datatype]
        flat = tensor.data.reshape(-1)
        if tensor.datatype == "BYTES":
            values: Any = [item if isinstance(item, bytes) else str(item).encode() for item in flat]
        else:
            values = flat.tolist()
        getattr(output.contents, field).extend(values)
    return message


def size_bound(response: InferResponse, request_id: str | None) -> int | None:
    """At least the encoded answer's size, from the tensors' element counts alone (a few
    attribute reads: `ByteSize()` encodes the whole message, as dear as sending it): every
    element at its widest on the wire (a varint: 10 bytes), generous room for names and
    shapes. None where only encoding can tell: text (BYTES) and parameters."""
    if response.parameters:
        return None
    size = 1024 + len(response.model_name) + len(response.model_version or "")
    size += len(request_id or "")  # the answer echoes the request's id
    for tensor in response.outputs:
        if tensor.datatype == "BYTES" or tensor.parameters:
            return None
        size += 256 + len(tensor.name) + 10 * tensor.data.size
    return size
