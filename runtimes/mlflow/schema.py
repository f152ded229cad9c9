"""The model's MLflow signature, applied to requests: V2 metadata, model input, params, errors.

JSON cannot say everything a signature wants (7 for a double column, base64 for binary), so
values are coerced to the signature where no value changes; what still does not fit is left
for MLflow's own enforcement, whose complaints become 400s naming the column. A model without
a signature gets its input as sent: one ndarray, or a DataFrame for columns.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Any

import numpy as np

from modelport.base.datatypes import from_numpy, narrow_floats
from modelport.base.errors import InferenceFailed, InvalidInput, ModelportError
from modelport.base.messages import InferRequest, Tensor, TensorSpec
from modelport.base.tabular import as_text, column_arrays
from modelport.base.tensors import bind_inputs

# MLflow reports signature violations with these codes; anything else is the model's fault.
_CLIENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}


class Signature:
    """An MLflow model's input/output schema and declared params (each may be absent)."""

    def __init__(self, metadata: Any, model: str) -> None:
        self.model = model
        self.input_schema = metadata.get_input_schema()
        self.output_schema = metadata.get_output_schema()
        params_schema = metadata.get_params_schema()
        self.param_names = [spec.name for spec in params_schema.params] if params_schema else []
        schema = self.input_schema
        self.tensor_based: bool = schema is not None and schema.is_tensor_spec()
        named_columns = schema is not None and not self.tensor_based and schema.has_input_names()
        self.column_names: list[str] = list(schema.input_names()) if named_columns else []

    # --- V2 metadata ----------------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        return _specs(self.input_schema, "input-")

    def outputs(self) -> list[TensorSpec]:
        return _specs(self.output_schema, "output-")

    # --- request -> model input -----------------------------------------------------------

    def model_input(self, request: InferRequest) -> Any:
        """DataFrame (column-based or `pd`), one ndarray, or a dict of named ndarrays."""
        inputs = request.inputs
        schema = self.input_schema
        if schema is None:
            if len(inputs) == 1 and request.content_type != "pd":
                return inputs[0].data
            return self.dataframe(inputs)
        if not self.tensor_based:
            return self.dataframe(inputs)
        specs = schema.inputs
        if not schema.has_input_names():
            if len(inputs) != 1:
                raise InvalidInput(f"model '{self.model}' takes one tensor, got {len(inputs)}")
            return _tensor(inputs[0], specs[0])
        # Bound as the other tensor runtimes bind theirs: an unknown (misspelt) tensor is a
        # 400, where MLflow would only log that it ignores it.
        bound = bind_inputs(inputs, [spec.name for spec in specs], f"model '{self.model}'")
        return {spec.name: _tensor(bound[spec.name], spec) for spec in specs}

    def dataframe(self, inputs: list[Tensor]) -> Any:
        """One column per input (or one 2-D tensor by position), checked against the signature.

        A lone 1-D tensor for a one-column signature is that column, one value per row, as
        MLflow's scoring server reads `{"instances": [1.0, 2.0]}`.
        """
        import pandas as pd

        names = self.column_names
        if len(inputs) == 1 and inputs[0].name not in names:
            data = inputs[0].data
            if data.ndim == 1 and len(names) == 1:
                data = data[:, np.newaxis]
            if data.ndim == 2:
                if names and data.shape[1] != len(names):
                    raise InvalidInput(
                        f"input '{inputs[0].name}': model expects {len(names)} columns "
                        f"({', '.join(names)}), got {data.shape[1]}"
                    )
                columns = names or [str(i) for i in range(data.shape[1])]
                inputs = [Tensor(name, data[:, i]) for i, name in enumerate(columns)]
        frame = column_arrays(inputs)
        if names:
            specs = {spec.name: spec for spec in self.input_schema.inputs}
            required = [name for name in names if getattr(specs[name], "required", True)]
            missing = [name for name in required if name not in frame]
            if missing:
                raise InvalidInput(f"missing input column(s): {', '.join(missing)}")
            # Columns outside the signature are dropped, as MLflow itself ignores them.
            frame = {
                name: _column_for(frame[name], specs[name], name) for name in names if name in frame
            }
        elif self.input_schema is not None:
            # Unnamed columns: MLflow takes the first ones by position, so they are cast so too.
            positional = zip(frame.items(), self.input_schema.inputs, strict=False)
            frame = {name: _column_for(values, spec, name) for (name, values), spec in positional}
        return pd.DataFrame(frame)

    def params(self, request: InferRequest) -> dict[str, Any]:
        """Params declared by the signature, from `params` (V1, V2) or V2 request parameters.

        V2 request parameters also carry protocol keys (content_type, binary_data_output,
        ...), so only declared names are taken from them; an explicit `params` object naming
        an undeclared param is a 400 (a typo would otherwise silently use the default).
        """
        parameters = request.parameters
        picked = {name: parameters[name] for name in self.param_names if name in parameters}
        explicit = parameters.get("params")
        if explicit is None:
            return picked
        if not isinstance(explicit, dict):
            raise InvalidInput("'params' must be an object of parameter names to values")
        unknown = [name for name in explicit if name not in self.param_names]
        if unknown:
            declared = ", ".join(self.param_names) or "none"
            raise InvalidInput(
                f"unknown param(s) {', '.join(map(str, unknown))}; model '{self.model}' "
                f"declares: {declared}"
            )
        return {**picked, **explicit}

    # --- errors ---------------------------------------------------------------------------

    def failure(self, exc: Exception) -> ModelportError:
        """MLflow's signature/params enforcement is the client's mistake (400); else 500.

        Without an input signature nothing was checked before the framework ran, so its
        input complaints (ValueError, TypeError, KeyError) are the client's mistake too.
        """
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and exc.error_code in _CLIENT_ERROR_CODES:
            return InvalidInput(f"model '{self.model}' rejected the input: {_reason(exc)}")
        if self.input_schema is None and isinstance(exc, ValueError | TypeError | KeyError):
            return InvalidInput(f"model '{self.model}' rejected the input: {exc}")
        return InferenceFailed(f"model '{self.model}' failed: {type(exc).__name__}: {exc}")


def _specs(schema: Any, prefix: str) -> list[TensorSpec]:
    """An MLflow Schema as V2 metadata: columns are [-1] tensors, tensors keep their shape.

    Complex column types (arrays, objects, maps) travel as BYTES, like MLServer's.
    """
    if schema is None:
        return []
    from mlflow.types.schema import TensorSpec as MlflowTensorSpec

    specs = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or f"{prefix}{index}"
        if isinstance(spec, MlflowTensorSpec):
            specs.append(TensorSpec(name, _datatype(spec.type), list(spec.shape)))
        elif isinstance(spec.type, enum.Enum):  # a DataType: `double`, `string`...
            specs.append(TensorSpec(name, _datatype(spec.type.to_numpy()), [-1]))  # type: ignore[attr-defined]
        else:
            specs.append(TensorSpec(name, "BYTES", [-1]))
    return specs


def _datatype(dtype: Any) -> str:
    """The OIP datatype of a numpy dtype; those without one (datetimes) travel as BYTES."""
    try:
        return from_numpy(np.dtype(dtype))
    except InvalidInput:
        return "BYTES"


def _column_for(values: np.ndarray, spec: Any, name: str) -> np.ndarray:
    """Cast a column to its signature type where JSON cannot say it (ints for a double);
    `name` is the column's (the request's own where the signature names none)."""
    if not isinstance(spec.type, enum.Enum):
        return values  # complex types: MLflow checks them itself
    dtype = np.dtype(spec.type.to_numpy())  # type: ignore[attr-defined]
    if dtype.kind == "S":
        return _binary(values, name)
    if dtype.kind == "M" and values.dtype.kind in "OUS":
        return _datetimes(values, name)
    return _coerced(values, dtype, f"column '{name}'")


def _tensor(tensor: Tensor, spec: Any) -> np.ndarray:
    """Check a tensor's shape against its spec and cast it to the spec's dtype."""
    data = tensor.data
    expected = list(spec.shape)
    if len(expected) != data.ndim or any(
        want != -1 and want != got for want, got in zip(expected, data.shape, strict=True)
    ):
        raise InvalidInput(
            f"input '{tensor.name}': model expects shape {expected}, got {list(data.shape)}"
        )
    dtype = np.dtype(spec.type)
    if dtype.kind in "US" and data.dtype == object:
        return _strings(data, dtype)
    return _coerced(data, dtype, f"input '{tensor.name}'")


def _strings(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """BYTES for a string (or bytes) tensor spec as the numpy text array MLflow checks for
    (it refuses object arrays there); anything but text is left for MLflow to refuse."""
    if not all(isinstance(value, str | bytes) for value in data.flat):
        return data
    if dtype.kind == "U":
        return as_text(data).astype(np.str_)
    encoded = [value.encode() if isinstance(value, str) else value for value in data.flat]
    return np.array(encoded, dtype=np.bytes_).reshape(data.shape)


def _coerced(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """Text for string dtypes, else numbers cast as `_numeric` allows."""
    if dtype.kind in "OUS":
        return as_text(values)
    return _numeric(values, dtype, what)


def _numeric(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """Numbers to the signature's numeric dtype when no value changes; else left as sent.

    Anything left as sent is rejected by MLflow's own enforcement with a message that
    names the column. Booleans are not numbers here: MLflow refuses them for numeric
    columns and tensors, and casting them would hide the client's mistake.
    """
    if values.dtype == dtype or values.dtype.kind not in "biuf" or dtype.kind not in "iuf":
        return values
    if values.dtype.kind == "b":
        raise InvalidInput(f"{what}: model takes {from_numpy(dtype)}, got BOOL")
    if dtype.kind == "f":
        cast = narrow_floats(values, dtype)
        if cast is None:
            raise InvalidInput(f"{what}: values out of range for {dtype.name}")
        return cast
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        return values
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise InvalidInput(f"{what}: values out of range for {dtype.name}")
    return values.astype(dtype)


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """Binary columns: bytes as sent in binary, base64 text in JSON (MLflow's convention)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"column '{name}': binary values must be base64 text") from None
        out[i] = value
    return out


def _datetimes(values: np.ndarray, name: str) -> np.ndarray:
    """Datetime columns travel as text (their metadata says BYTES): parsed as MLflow's own
    scoring server does, since MLflow's enforcement refuses text for a datetime column."""
    import pandas as pd

    try:
        return np.asarray(pd.to_datetime(as_text(values)))
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"column '{name}': values must be dates or times ({exc})") from None


def _reason(exc: Exception) -> str:
    """MLflow's message without the dump of the whole input it prepends."""
    message = getattr(exc, "message", None) or str(exc)
    if message.startswith("Failed to enforce schema") and "Error: " in message:
        return message.rsplit("Error: ", 1)[1].strip()
    return message
