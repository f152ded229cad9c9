"""TF Serving's REST dialect of V1, as KServe's TensorFlow runtime speaks it.

Row format `{"instances": [...]}` (one value, or one object of named inputs, per instance)
is answered per instance as `{"predictions": [...]}`; columnar `{"inputs": ...}` (one value,
or an object of named inputs) is answered as `{"outputs": ...}`. Binary strings travel as
`{"b64": "<base64>"}`. Which format came in rides from decode to encode in the request and
response parameters (`tf_serving_format`), because the server calls them separately.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput
from modelport.base.messages import InferRequest, InferResponse, Parameters, Tensor
from modelport.base.protocol import v1
from modelport.base.tensors import split_rows

# TF Serving's body field; also the V2 request parameter and the `--signature_name` setting.
SIGNATURE = "signature_name"
FORMAT = "tf_serving_format"


def signature_name(body: Any) -> str | None:
    """The signature a body names: read first, since it decides how the inputs decode."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with 'instances' or 'inputs'")
    name = body.get(SIGNATURE)
    if name is not None and not isinstance(name, str):
        raise InvalidInput("'signature_name' must be a string")
    return name


def decode_request(body: dict[str, Any], signature: str, inputs: Sequence[str]) -> InferRequest:
    """A row or columnar body (checked by `signature_name`) as one tensor per input name.

    `signature` and `inputs` are the chosen signature's name and input names: bare values
    (not objects of named inputs) go to its sole input.
    """
    parameters: Parameters = {}
    if body.get(SIGNATURE) is not None:
        parameters[SIGNATURE] = body[SIGNATURE]
    if ("instances" in body) == ("inputs" in body):
        raise InvalidInput(
            "request body needs exactly one of 'instances' (row format) or 'inputs' "
            "(columnar format)"
        )
    if "instances" in body:
        parameters[FORMAT] = "row"
        columns = _rows_to_columns(body["instances"], signature, inputs)
    else:
        parameters[FORMAT] = "columnar"
        values = body["inputs"]
        columns = dict(values) if _is_named(values) else {_sole(signature, inputs): values}
    tensors = [Tensor(name, _to_array(name, value)) for name, value in columns.items()]
    return InferRequest(inputs=tensors, parameters=parameters)


def response_parameters(request: InferRequest) -> Parameters:
    """Pass the request's format on to `encode_response` (nothing for V2 requests)."""
    return {FORMAT: request.parameters[FORMAT]} if FORMAT in request.parameters else {}


def encode_response(response: InferResponse) -> dict[str, Any]:
    """Columnar answers keep whole tensors; row answers split them per instance."""
    if not response.outputs:
        raise InferenceFailed(NO_OUTPUTS)
    values = {tensor.name: _json_ready(tensor) for tensor in response.outputs}
    columnar = response.parameters.get(FORMAT) == "columnar"
    key = "outputs" if columnar else "predictions"
    if len(values) == 1:
        return {key: _plain(next(iter(values.values())))}
    if columnar:
        return {key: {name: _plain(value) for name, value in values.items()}}
    rows = split_rows(values)
    if rows is None:
        sizes = ", ".join(f"{n}: {list(np.shape(v))}" for n, v in values.items())
        raise InvalidInput(
            f"outputs do not share a batch size ({sizes}), so they cannot be returned per "
            "instance: send the columnar format ({'inputs': ...}) instead"
        )
    return {key: [{name: _plain(value) for name, value in row.items()} for row in rows]}


# --- JSON -> arrays -----------------------------------------------------------------------


def _is_named(value: Any) -> bool:
    """A JSON object of named inputs (as opposed to a `{"b64": ...}` value)."""
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _sole(signature: str, inputs: Sequence[str]) -> str:
    """Where bare values go: only a one-input signature can take them."""
    if len(inputs) != 1:
        raise InvalidInput(
            f"signature '{signature}' takes several inputs ({', '.join(inputs)}): "
            "send each instance as an object keyed by input name"
        )
    return inputs[0]


def _rows_to_columns(instances: Any, signature: str, inputs: Sequence[str]) -> dict[str, list[Any]]:
    """Row format: one value (sole input) or one object of named inputs per instance."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    named = [_is_named(instance) for instance in instances]
    if not any(named):
        return {_sole(signature, inputs): instances}
    if not all(named):
        raise InvalidInput("'instances' mixes objects of named inputs with bare values")
    names = list(dict.fromkeys(key for instance in instances for key in instance))
    columns: dict[str, list[Any]] = {}
    for name in names:
        for index, instance in enumerate(instances):
            if name not in instance:
                raise InvalidInput(f"instance {index} lacks input '{name}'")
        columns[name] = [instance[name] for instance in instances]
    return columns


def _to_array(name: str, value: Any) -> np.ndarray:
    """JSON values (numbers, strings, `{"b64": ...}`, nested lists) to one array."""
    value = _decode_b64(name, value)
    try:
        probe = _probe(value)
    except ValueError:
        raise InvalidInput(
            f"input '{name}': values are ragged (rows of different lengths)"
        ) from None
    if probe.dtype.kind in "iuf":
        if bool in set(map(type, _flat(value, probe.ndim))):
            raise InvalidInput(
                f"input '{name}': values mix booleans with numbers; send numbers only"
            )
        return probe
    if probe.dtype.kind == "b":
        return probe
    if probe.dtype.kind not in "US":
        raise InvalidInput(f"input '{name}': values must be numbers, strings or {{'b64': ...}}")
    # Strings and bytes stay whole in an object array ('S' would drop trailing NUL bytes).
    array = np.empty(probe.shape, dtype=object)
    array.flat[:] = list(_leaves(value, probe.ndim))
    return array


def _probe(value: Any) -> np.ndarray:
    """The values as numpy stacks them, for their shape and kind only. Decoded `b64` bytes
    beside plain text would make numpy decode the bytes as ASCII (and fail on any other
    byte), so then they stand in as empty text: TF Serving reads each string on its own."""
    try:
        return np.array(value)
    except UnicodeDecodeError:
        return np.array(_bytes_as_text(value))


def _bytes_as_text(value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes_as_text(item) for item in value]
    return "" if isinstance(value, bytes) else value


def _flat(value: Any, ndim: int) -> list[Any]:
    """The scalars of a nested list `ndim` deep (numpy turned a JSON `true` among numbers
    into 1, which only the values themselves still tell)."""
    if ndim == 0:
        return [value]
    items = value
    for _ in range(ndim - 1):
        items = list(itertools.chain.from_iterable(items))
    return list(items)


def _leaves(value: Any, ndim: int) -> Iterator[Any]:
    """The scalars of a nested list `ndim` deep, row-major."""
    if ndim == 0:
        yield value
        return
    for item in value:
        yield from _leaves(item, ndim - 1)


def _decode_b64(name: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_b64(name, item) for item in value]
    if isinstance(value, dict):
        if not _is_b64(value) or not isinstance(value["b64"], str):
            raise InvalidInput(f"input '{name}': an object value must be {{'b64': '<base64>'}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as exc:
            raise InvalidInput(f"input '{name}': invalid base64 ({exc})") from None
    return value


# --- tensors -> JSON ----------------------------------------------------------------------


def _json_ready(tensor: Tensor) -> Any:
    """V1 JSON: numbers as the base writes them; strings as text, or `{"b64": ...}` as TF
    Serving does (always for outputs named `*_bytes`, else for bytes that are not UTF-8)."""
    if tensor.datatype != "BYTES":
        return v1.json_ready(tensor)
    encode_all = tensor.name.endswith("_bytes")
    out = np.empty(tensor.data.shape, dtype=object)
    out.flat[:] = [_text(item, encode_all) for item in tensor.data.flat]
    return out


def _text(item: Any, as_b64: bool) -> Any:
    if isinstance(item, str):
        item = item.encode()
    if not as_b64:
        try:
            return item.decode()
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(item).decode()}


def _plain(value: Any) -> Any:
    """orjson writes numeric arrays itself; object arrays become lists."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value.tolist()
    return value
