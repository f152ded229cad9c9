"""KServe's V1 protocol: `{"instances": [...]}` in, `{"predictions": [...]}` out.

Rows of numbers become one tensor `input-0`; rows of objects become one tensor per key with
request content type `pd`, exactly what a V2 client sends for a DataFrame, so predictors
decode both protocols through the same path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput
from modelport.base.messages import InferRequest, InferResponse, Tensor

DEFAULT_INPUT = "input-0"


def instances_of(body: Any) -> list[Any]:
    """The `instances` (or `inputs`, as KServe also accepts) list of a V1 body."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with 'instances' or 'inputs'")
    instances = body.get("instances", body.get("inputs"))
    if instances is None:
        raise InvalidInput("request body must contain 'instances' (or 'inputs')")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    return instances


def decode_request(body: Any) -> InferRequest:
    """Decode a V1 body into an InferRequest (see the module docstring for the mapping)."""
    instances = instances_of(body)
    if all(isinstance(row, dict) for row in instances):
        return records_to_request(instances)
    array = json_array(
        instances, "'instances'", "rows of numbers (or of objects with named fields)"
    )
    return InferRequest(inputs=[Tensor(DEFAULT_INPUT, array)])


def json_array(values: Any, what: str, expected: str, kinds: str = "biufUS") -> np.ndarray:
    """JSON lists to an ndarray: ragged lists and values of another kind are 400s naming
    `what`; strings become an object array (BYTES)."""
    try:
        array = np.array(values)
    except ValueError:
        raise InvalidInput(f"{what} is ragged: every row must have the same shape") from None
    if array.dtype.kind not in kinds:
        raise InvalidInput(f"{what} must be {expected}")
    if array.dtype.kind in "US":
        array = array.astype(object)
    return array


def records_to_request(records: list[dict[str, Any]]) -> InferRequest:
    """Rows of objects to one column tensor per key (order of first appearance)."""
    columns: dict[str, None] = {}
    for row in records:
        columns.update(dict.fromkeys(row))
    inputs = []
    for column in columns:
        values = [row.get(column) for row in records]
        array = np.array(values)
        if array.ndim != 1 or array.dtype.kind not in "biuf":
            array = np.empty(len(values), dtype=object)
            array[:] = values
        inputs.append(Tensor(column, array))
    return InferRequest(inputs=inputs, parameters={"content_type": "pd"})


def encode_response(response: InferResponse) -> dict[str, Any]:
    """The first output as `predictions` (V1 has one prediction per instance)."""
    if not response.outputs:
        raise InferenceFailed(NO_OUTPUTS)
    return {"predictions": json_ready(response.outputs[0])}


def json_ready(tensor: Tensor) -> Any:
    """A tensor's data in a form orjson writes as V1 JSON.

    JSON has no half floats (FP16 and BF16 are widened to float32); numeric arrays go to
    orjson as they are (fast, shortest float repr); scalars, and strings or bytes (as
    UTF-8 text), become Python values.
    """
    data = tensor.data
    if tensor.datatype == "BF16":
        data = (data.astype(np.uint32) << 16).view(np.float32)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    if data.dtype == object:
        text = np.empty(data.shape, dtype=object)
        text.reshape(-1)[:] = [_text(item) for item in data.reshape(-1)]
        return text.tolist()
    if data.ndim == 0:
        return data.item()
    return np.ascontiguousarray(data)


def _text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            raise InvalidInput("an output holds bytes that are not UTF-8 text") from None
    return item
