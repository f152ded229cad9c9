"""MLflow's V1 scoring formats in, and `mlflow models serve`'s answers out.

A V1 body holds exactly one of `dataframe_split`, `dataframe_records`, `instances` or
`inputs` (plus optional `params`), so MLflow clients work unchanged. Column data becomes one
tensor per column with content type `pd`, exactly what a V2 client sends for a DataFrame, so
both protocols reach the model through the same path. A prediction becomes tensors the same
way back: a DataFrame one per column (`pd`), a dict one per key, anything else `output-0`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.protocol import v1

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
DEFAULT_OUTPUT = "output-0"
JSON = "json"  # content type of an output whose BYTES items are JSON text


def decode_request(body: Any, *, tensor_based: bool, columns: list[str]) -> InferRequest:
    """A V1 body to an InferRequest, given the signature's kind and column names (if any)."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    found = [key for key in FORMATS if key in body]
    if len(found) != 1:
        raise InvalidInput(
            f"request body must hold exactly one of {', '.join(FORMATS)}; "
            f"got {', '.join(found) or 'none'}"
        )
    key = found[0]
    payload = body[key]
    if key == "dataframe_split":
        request = _split_frame(payload, columns)
    elif key == "dataframe_records":
        if not isinstance(payload, list) or not payload:
            raise InvalidInput("'dataframe_records' must be a non-empty list of objects")
        if not all(isinstance(row, dict) for row in payload):
            raise InvalidInput("'dataframe_records' rows must be JSON objects")
        request = v1.records_to_request(payload)
    elif isinstance(payload, dict):
        request = _named(payload, key, tensor_based)
    elif (
        tensor_based
        and isinstance(payload, list)
        and payload
        and all(isinstance(row, dict) for row in payload)
    ):
        # TF-serving row format for named tensors: stack each name across rows.
        names = dict.fromkeys(name for row in payload for name in row)
        missing = [name for name in names if any(name not in row for row in payload)]
        if missing:
            raise InvalidInput(f"'{key}': every row needs tensor(s) {', '.join(missing)}")
        request = _named({name: [row[name] for row in payload] for name in names}, key, True)
    else:
        # Rows of numbers, or (column-based) rows of objects: KServe's own V1 mapping.
        request = v1.decode_request({"instances": payload})
    if "params" in body:
        if not isinstance(body["params"], dict):
            raise InvalidInput("'params' must be a JSON object")
        request.parameters["params"] = body["params"]
    return request


def _split_frame(payload: Any, signature_columns: list[str]) -> InferRequest:
    """pandas' split orient: `{"columns": [...], "data": [[...], ...]}` (index ignored)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise InvalidInput("'dataframe_split' must be an object with a 'data' list of rows")
    rows = payload["data"]
    if not rows:
        raise InvalidInput("'dataframe_split': 'data' is empty")
    columns = payload.get("columns")
    if columns is None:
        columns = signature_columns or [str(i) for i in range(_width(rows[0]))]
    if not isinstance(columns, list):
        raise InvalidInput("'dataframe_split': 'columns' must be a list of names")
    width = len(columns)
    if any(_width(row) != width for row in rows):
        raise InvalidInput(f"'dataframe_split': every row of 'data' needs {width} values")
    rows = [row if isinstance(row, list) else [row] for row in rows]
    return _frame((name, [row[i] for row in rows]) for i, name in enumerate(columns))


def _named(payload: dict[str, Any], key: str, tensor_based: bool) -> InferRequest:
    """`{"inputs": {name: values}}`: columns (column-based) or named tensors."""
    if not payload:
        raise InvalidInput(f"'{key}' is empty")
    if not tensor_based:
        return _frame((name, v if isinstance(v, list) else [v]) for name, v in payload.items())
    inputs = []
    for name, value in payload.items():
        array = v1.json_array(value, f"'{key}': tensor '{name}'", "numbers or strings")
        inputs.append(Tensor(str(name), array))
    return InferRequest(inputs=inputs)


def _frame(columns: Iterable[tuple[Any, list[Any]]]) -> InferRequest:
    """One tensor per column, content type `pd`, as `v1.records_to_request` makes for rows."""
    inputs = [Tensor(str(name), _column(values)) for name, values in columns]
    return InferRequest(inputs=inputs, parameters={"content_type": "pd"})


def _width(row: Any) -> int:
    return len(row) if isinstance(row, list) else 1


def _column(values: list[Any]) -> np.ndarray:
    """A JSON column: numbers (or booleans) as a numeric array, anything else as objects."""
    array = np.array(values) if values else np.empty(0)
    if array.ndim == 1 and array.dtype.kind in "biuf":
        return array
    return _objects(values)


def _objects(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object array of `values`, even when they are lists (numpy would nest them)."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# --- prediction -> tensors -> V1 answer --------------------------------------------------------


def result_tensors(result: Any) -> tuple[list[Tensor], dict[str, Any]]:
    """DataFrame -> one output per column (content type `pd`); dict -> one per key;
    Series, ndarray or list -> `output-0`."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        tensors = [_output(str(name), result[name].to_numpy()) for name in result.columns]
        return tensors, {"content_type": "pd"}
    if isinstance(result, dict):
        return [_output(str(name), np.asarray(value)) for name, value in result.items()], {}
    if isinstance(result, pd.Series):
        return [_output(DEFAULT_OUTPUT, result.to_numpy())], {}
    try:
        data = np.asarray(result)
    except ValueError:  # ragged lists
        data = _objects(result)
    return [_output(DEFAULT_OUTPUT, data)], {}


def _output(name: str, data: np.ndarray) -> Tensor:
    """Anything without an OIP datatype as text: values JSON has a form for (records, lists,
    numbers mixed in, missing values) as JSON text marked `content_type: json`, which V1
    decodes back to the values MLflow answers; the rest (datetimes...) as their str()."""
    if data.dtype.kind in "biuf":
        return Tensor(name, data)
    if data.dtype.kind in "US":
        return Tensor(name, data.astype(object), "BYTES")
    if data.dtype == object and all(isinstance(v, str | bytes) for v in data.flat):
        return Tensor(name, data, "BYTES")
    text = np.empty(data.shape, dtype=object)
    if data.dtype == object and any(_needs_json(v) for v in data.flat):
        text.flat[:] = [_json_text(v) for v in data.flat]
        return Tensor(name, text, "BYTES", {"content_type": JSON})
    text.flat[:] = [str(v) for v in data.flat]
    return Tensor(name, text, "BYTES")


def _needs_json(value: Any) -> bool:
    """Values whose str() is Python's repr rather than what MLflow answers."""
    return _missing(value) or isinstance(
        value, dict | list | tuple | np.ndarray | bool | int | float | np.number | np.bool_
    )


def _missing(value: Any) -> bool:
    """None, and the NaN pandas puts for a missing text value."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _json_text(value: Any) -> str:
    return json.dumps(None if _missing(value) else value, default=_json_default)


def _json_default(value: Any) -> Any:
    """numpy values as their Python ones, bytes as text, anything else as its str()."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def encode_response(response: InferResponse) -> dict[str, Any]:
    """As `mlflow models serve`: DataFrame -> records, dict -> {name: list}, else a list.

    Values go out as Python lists (not `v1.encode_response`'s raw arrays), so BYTES are
    text and numbers serialize as MLflow's own server writes them.
    """
    outputs = response.outputs
    if not outputs:
        raise InferenceFailed(NO_OUTPUTS)
    if response.parameters.get("content_type") == "pd":
        columns = [(tensor.name, _jsonable(tensor)) for tensor in outputs]
        rows = len(columns[0][1])
        return {"predictions": [{name: data[i] for name, data in columns} for i in range(rows)]}
    if len(outputs) > 1 or outputs[0].name != DEFAULT_OUTPUT:
        # A dict, even of one key: MLflow answers it {name: list} whatever its size.
        return {"predictions": {tensor.name: _jsonable(tensor) for tensor in outputs}}
    return {"predictions": _jsonable(outputs[0])}


def _jsonable(tensor: Tensor) -> Any:
    """The tensor as JSON values in its shape: a scalar answer stays a scalar, not its
    characters, and text at any depth is str (orjson refuses bytes)."""
    data = tensor.data
    if data.dtype != object:
        return data.tolist()
    decode = json.loads if tensor.parameters.get("content_type") == JSON else _text
    values = np.empty(data.shape, dtype=object)
    for index, item in enumerate(data.flat):
        values.flat[index] = decode(item)
    return values.tolist()


def _text(item: Any) -> Any:
    return item.decode() if isinstance(item, bytes) else item
