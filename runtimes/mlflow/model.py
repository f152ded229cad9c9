"""MLflow predictor: any MLflow model directory (`MLmodel` + artifacts), loaded as pyfunc.

The model's signature drives everything: it is the V2 metadata, it decides whether a
request becomes a DataFrame (column-based) or ndarray(s) (tensor-based), and which
`params` a request may pass. V1 accepts MLflow's own scoring formats (`dataframe_split`,
`dataframe_records`, `instances`, `inputs`, plus `params`) and answers as
`mlflow models serve` does (`{"predictions": ...}`), so MLflow clients work unchanged.
Signature violations are 400s naming the column; the model's `requirements.txt` is
compared with what is installed and differences are logged once at load time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError, ModelportError
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import Predictor, load_artifact
from modelport.base.protocol import v1
from modelport.runtimes.mlflow.requirements import (
    MLMODEL,
    requirement_for,
    warn_requirement_mismatches,
)

DEFAULT_OUTPUT = "output-0"
V1_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow column types -> OIP datatypes (complex types travel as BYTES, like MLServer's).
_COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
}
# MLflow reports signature violations with these codes; anything else is the model's fault.
_CLIENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}


class MLflowPredictor(Predictor):
    runtime = "mlflow"
    extensions = ()

    @classmethod
    def holds_model(cls, directory: Path) -> bool:
        return (directory / MLMODEL).is_file()

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        import mlflow.pyfunc

        _route_mlflow_logs()
        path = self.model_path()
        warn_requirement_mismatches(self.name, path)
        # suppress_warnings: our single warning line above replaces MLflow's multi-line one.
        self.model: Any = load_artifact(_loader(mlflow.pyfunc.load_model), path)
        metadata = self.model.metadata
        self.input_schema = metadata.get_input_schema()
        self.output_schema = metadata.get_output_schema()
        params_schema = metadata.get_params_schema()
        self.param_names = [spec.name for spec in params_schema.params] if params_schema else []

    def model_path(self) -> Path:
        """The model directory, or the local MLflow URI `parameters.uri` names (MLServer's key).

        Plain paths are relative to the model dir; `file:` URIs are local paths; other MLflow
        URIs (`runs:/`, `models:/`) are resolved by MLflow against its tracking URI, which
        works offline for a local file store.
        """
        uri = self.settings.parameters.get("uri")
        if not uri:
            return self.settings.model_dir
        uri = str(uri)
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ModelLoadError(f"model URI '{uri}' names a remote host; only local files")
            path = Path(urllib.request.url2pathname(parsed.path))
        elif parsed.scheme in ("runs", "models"):
            import mlflow.artifacts

            return Path(load_artifact(_downloader(mlflow.artifacts), Path(uri)))
        elif parsed.scheme:
            raise ModelLoadError(
                f"model URI '{uri}': only local MLflow URIs are loaded here; pass a remote "
                "location as --model_dir (downloaded by modelport[storage]) instead"
            )
        else:
            path = self.settings.model_dir / uri
        if not (path / MLMODEL).is_file():
            raise ModelLoadError(f"model URI '{uri}': '{path}' holds no {MLMODEL} file")
        return path

    def unload(self) -> None:
        self.model = None

    # --- metadata -----------------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        return _specs(self.input_schema, "input-")

    def outputs(self) -> list[TensorSpec]:
        return _specs(self.output_schema, "output-")

    @property
    def tensor_based(self) -> bool:
        return self.input_schema is not None and self.input_schema.is_tensor_spec()

    @property
    def column_names(self) -> list[str]:
        if (
            self.input_schema is None
            or self.tensor_based
            or not self.input_schema.has_input_names()
        ):
            return []
        return list(self.input_schema.input_names())

    # --- V1: MLflow's scoring formats -----------------------------------------------------

    def decode_v1(self, body: Any) -> InferRequest:
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        found = [key for key in V1_FORMATS if key in body]
        if len(found) != 1:
            raise InvalidInput(
                f"request body must hold exactly one of {', '.join(V1_FORMATS)}; "
                f"got {', '.join(found) or 'none'}"
            )
        key = found[0]
        payload = body[key]
        if key == "dataframe_split":
            request = self._split_frame(payload)
        elif key == "dataframe_records":
            if not isinstance(payload, list) or not payload:
                raise InvalidInput("'dataframe_records' must be a non-empty list of objects")
            if not all(isinstance(row, dict) for row in payload):
                raise InvalidInput("'dataframe_records' rows must be JSON objects")
            request = v1.records_to_request(payload)
        elif isinstance(payload, dict):
            request = self._named(payload, key)
        elif (
            self.tensor_based
            and isinstance(payload, list)
            and payload
            and all(isinstance(row, dict) for row in payload)
        ):
            # TF-serving row format for named tensors: stack each name across rows.
            names = dict.fromkeys(name for row in payload for name in row)
            missing = [name for name in names if any(name not in row for row in payload)]
            if missing:
                raise InvalidInput(f"'{key}': every row needs tensor(s) {', '.join(missing)}")
            request = self._named({name: [row[name] for row in payload] for name in names}, key)
        else:
            request = v1.decode_request({"instances": payload})
        if "params" in body:
            if not isinstance(body["params"], dict):
                raise InvalidInput("'params' must be a JSON object")
            request.parameters["params"] = body["params"]
        return request

    def _split_frame(self, payload: Any) -> InferRequest:
        """pandas' split orient: `{"columns": [...], "data": [[...], ...]}` (index ignored)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise InvalidInput("'dataframe_split' must be an object with a 'data' list of rows")
        rows = payload["data"]
        if not rows:
            raise InvalidInput("'dataframe_split': 'data' is empty")
        columns = payload.get("columns")
        if columns is None:
            columns = self.column_names or [str(i) for i in range(_width(rows[0]))]
        if not isinstance(columns, list):
            raise InvalidInput("'dataframe_split': 'columns' must be a list of names")
        width = len(columns)
        if any(_width(row) != width for row in rows):
            raise InvalidInput(f"'dataframe_split': every row of 'data' needs {width} values")
        rows = [row if isinstance(row, list) else [row] for row in rows]
        inputs = [
            Tensor(str(name), _column([row[i] for row in rows])) for i, name in enumerate(columns)
        ]
        return InferRequest(inputs=inputs, parameters={"content_type": "pd"})

    def _named(self, payload: dict[str, Any], key: str) -> InferRequest:
        """`{"inputs": {name: values}}`: columns (column-based) or named tensors."""
        if not payload:
            raise InvalidInput(f"'{key}' is empty")
        if not self.tensor_based:
            columns = [Tensor(str(name), _column(_as_list(v))) for name, v in payload.items()]
            return InferRequest(inputs=columns, parameters={"content_type": "pd"})
        inputs = []
        for name, value in payload.items():
            try:
                array = np.array(value)
            except ValueError:
                raise InvalidInput(f"'{key}': tensor '{name}' is ragged") from None
            if array.dtype.kind not in "biufUS":
                raise InvalidInput(f"'{key}': tensor '{name}' must hold numbers or strings")
            if array.dtype.kind in "US":
                array = array.astype(object)
            inputs.append(Tensor(str(name), array))
        return InferRequest(inputs=inputs)

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        """As `mlflow models serve`: DataFrame -> records, dict -> {name: list}, else a list."""
        outputs = response.outputs
        if not outputs:
            raise InvalidInput("the model produced no outputs")
        if response.parameters.get("content_type") == "pd":
            columns = [(tensor.name, _jsonable(tensor.data)) for tensor in outputs]
            rows = len(columns[0][1])
            return {"predictions": [{name: data[i] for name, data in columns} for i in range(rows)]}
        if len(outputs) > 1:
            return {"predictions": {tensor.name: _jsonable(tensor.data) for tensor in outputs}}
        return {"predictions": _jsonable(outputs[0].data)}

    # --- inference ----------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        data = self.model_input(request)
        params = self.params(request)
        try:
            result = self.model.predict(data, params=params or None)
        except ModelportError:
            raise
        except Exception as exc:
            raise self.failure(exc) from exc
        outputs, parameters = _result_tensors(result)
        wanted = request.requested_output_names
        if wanted:
            by_name = {tensor.name: tensor for tensor in outputs}
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                raise InvalidInput(
                    f"unknown output(s) {', '.join(unknown)}; model '{self.name}' produced: "
                    f"{', '.join(by_name)}"
                )
            outputs = [by_name[name] for name in wanted]
        return InferResponse(outputs=outputs, id=request.id, parameters=parameters)

    def failure(self, exc: Exception) -> ModelportError:
        """MLflow's signature/params enforcement is the client's mistake (400); else 500.

        Without an input signature nothing was checked before the framework ran, so its
        input complaints (ValueError, TypeError, KeyError) are the client's mistake too.
        """
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and exc.error_code in _CLIENT_ERROR_CODES:
            return InvalidInput(f"model '{self.name}' rejected the input: {_reason(exc)}")
        if self.input_schema is None and isinstance(exc, ValueError | TypeError | KeyError):
            return InvalidInput(f"model '{self.name}' rejected the input: {exc}")
        return InferenceFailed(f"model '{self.name}' failed: {type(exc).__name__}: {exc}")

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
                f"unknown param(s) {', '.join(map(str, unknown))}; model '{self.name}' "
                f"declares: {declared}"
            )
        return {**picked, **explicit}

    def model_input(self, request: InferRequest) -> Any:
        """DataFrame (column-based or `pd`), one ndarray, or a dict of named ndarrays."""
        inputs = request.inputs
        schema = self.input_schema
        if schema is None:
            if len(inputs) == 1 and request.content_type != "pd":
                return inputs[0].data
            return self.dataframe(inputs)
        if not schema.is_tensor_spec():
            return self.dataframe(inputs)
        specs = schema.inputs
        if not schema.has_input_names():
            if len(inputs) != 1:
                raise InvalidInput(f"model '{self.name}' takes one tensor, got {len(inputs)}")
            return _tensor(inputs[0], specs[0])
        by_name = {tensor.name: tensor for tensor in inputs}
        missing = [s.name for s in specs if getattr(s, "required", True) and s.name not in by_name]
        if missing:
            raise InvalidInput(f"missing input tensor(s): {', '.join(missing)}")
        return {
            spec.name: _tensor(by_name[spec.name], spec) for spec in specs if spec.name in by_name
        }

    def dataframe(self, inputs: list[Tensor]) -> Any:
        """One column per input (or one 2-D tensor by position), checked against the signature."""
        import pandas as pd

        names = self.column_names
        if len(inputs) == 1 and inputs[0].data.ndim == 2 and inputs[0].name not in names:
            data = inputs[0].data
            if names and data.shape[1] != len(names):
                raise InvalidInput(
                    f"input '{inputs[0].name}': model expects {len(names)} columns "
                    f"({', '.join(names)}), got {data.shape[1]}"
                )
            columns = names or [str(i) for i in range(data.shape[1])]
            inputs = [Tensor(name, data[:, i]) for i, name in enumerate(columns)]
        frame: dict[str, np.ndarray] = {}
        rows: int | None = None
        for tensor in inputs:
            data = tensor.data
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise InvalidInput(
                    f"input '{tensor.name}': a column must be 1-D, got shape {tensor.shape}"
                )
            if rows is not None and len(data) != rows:
                raise InvalidInput(
                    f"input '{tensor.name}': has {len(data)} rows, other columns have {rows}"
                )
            rows = len(data)
            frame[tensor.name] = _text(data) if data.dtype == object else data
        if self.input_schema is not None and names:
            specs = {spec.name: spec for spec in self.input_schema.inputs}
            required = [name for name in names if getattr(specs[name], "required", True)]
            missing = [name for name in required if name not in frame]
            if missing:
                raise InvalidInput(f"missing input column(s): {', '.join(missing)}")
            # Columns outside the signature are dropped, as MLflow itself ignores them.
            frame = {name: _column_for(frame[name], specs[name]) for name in names if name in frame}
        return pd.DataFrame(frame)


# --- signature helpers ----------------------------------------------------------------------


def _specs(schema: Any, prefix: str) -> list[TensorSpec]:
    """An MLflow Schema as V2 metadata: columns are [-1] tensors, tensors keep their shape."""
    if schema is None:
        return []
    from mlflow.types.schema import TensorSpec as MlflowTensorSpec

    specs = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or f"{prefix}{index}"
        if isinstance(spec, MlflowTensorSpec):
            specs.append(TensorSpec(name, _datatype(spec.type), list(spec.shape)))
        else:
            datatype = _COLUMN_DATATYPES.get(_type_name(spec), "BYTES")
            specs.append(TensorSpec(name, datatype, [-1]))
    return specs


def _type_name(spec: Any) -> str:
    """A column's MLflow type name (`double`, `string`...); complex types by their repr."""
    return spec.type.name if isinstance(spec.type, enum.Enum) else str(spec.type)


def _datatype(dtype: np.dtype) -> str:
    from modelport.base.datatypes import from_numpy

    try:
        return from_numpy(np.dtype(dtype))
    except InvalidInput:
        return "BYTES"


def _column_for(values: np.ndarray, spec: Any) -> np.ndarray:
    """Cast a column to its signature type where JSON cannot say it (ints for a double)."""
    kind = _type_name(spec)
    if kind == "string":
        return _text(values)
    if kind == "binary":
        return _binary(values, spec.name)
    if kind in ("integer", "long", "float", "double"):
        return _numeric(values, np.dtype(spec.type.to_numpy()), f"column '{spec.name}'")
    return values


def _tensor(tensor: Tensor, spec: Any) -> np.ndarray:
    """Check a tensor's shape against its spec and cast its numbers to the spec's dtype."""
    data = tensor.data
    expected = list(spec.shape)
    if len(expected) != data.ndim or any(
        want != -1 and want != got for want, got in zip(expected, data.shape, strict=True)
    ):
        raise InvalidInput(
            f"input '{tensor.name}': model expects shape {expected}, got {list(data.shape)}"
        )
    dtype = np.dtype(spec.type)
    if dtype.kind in "OUS":
        return _text(data)
    return _numeric(data, dtype, f"input '{tensor.name}'")


def _numeric(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """Numbers to the signature's numeric dtype when no value changes; else left as sent.

    Anything left as sent is rejected by MLflow's own enforcement with a message that
    names the column.
    """
    if values.dtype == dtype or values.dtype.kind not in "biuf" or dtype.kind not in "iuf":
        return values
    if dtype.kind == "f":
        return values.astype(dtype)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        return values
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise InvalidInput(f"{what}: values out of range for {dtype.name}")
    return values.astype(dtype)


def _text(values: np.ndarray) -> np.ndarray:
    """Bytes (V2 binary BYTES) to str, as string columns want text."""
    if values.dtype.kind == "S" or (
        values.dtype == object and any(isinstance(v, bytes) for v in values.flat)
    ):
        decoded = [v.decode() if isinstance(v, bytes) else v for v in values.flat]
        out = np.empty(len(decoded), dtype=object)
        out[:] = decoded
        return out.reshape(values.shape)
    return values


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


def _reason(exc: Exception) -> str:
    """MLflow's message without the dump of the whole input it prepends."""
    message = getattr(exc, "message", None) or str(exc)
    if message.startswith("Failed to enforce schema") and "Error: " in message:
        return message.rsplit("Error: ", 1)[1].strip()
    return message


# --- request and result conversion -------------------------------------------------------


def _width(row: Any) -> int:
    return len(row) if isinstance(row, list) else 1


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _column(values: list[Any]) -> np.ndarray:
    """A JSON column: numbers (or booleans) as a numeric array, anything else as objects."""
    array = np.array(values) if values else np.empty(0)
    if array.ndim == 1 and array.dtype.kind in "biuf":
        return array
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _result_tensors(result: Any) -> tuple[list[Tensor], dict[str, Any]]:
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
    return [_output(DEFAULT_OUTPUT, _array(result))], {}


def _array(result: Any) -> np.ndarray:
    try:
        return np.asarray(result)
    except ValueError:  # ragged lists
        out = np.empty(len(result), dtype=object)
        out[:] = list(result)
        return out


def _output(name: str, data: np.ndarray) -> Tensor:
    """Anything without an OIP datatype (datetimes, pandas extension types) as text."""
    if data.dtype.kind in "biuf":
        return Tensor(name, data)
    if data.dtype.kind in "US":
        return Tensor(name, data.astype(object), "BYTES")
    if data.dtype == object and all(isinstance(v, str | bytes) for v in data.flat):
        return Tensor(name, data, "BYTES")
    text = np.empty(data.shape, dtype=object)
    text.flat[:] = [str(v) for v in data.flat]
    return Tensor(name, text, "BYTES")


def _jsonable(data: np.ndarray) -> list[Any]:
    if data.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in data.tolist()]
    return data.tolist()


# --- loading helpers --------------------------------------------------------------------------


def _loader(load_model: Any) -> Any:
    def load(path: Path) -> Any:
        try:
            return load_model(str(path), suppress_warnings=True)
        except ModuleNotFoundError as exc:
            wanted = requirement_for(path, exc.name or "")
            hint = f" (the model's requirements list {wanted})" if wanted else ""
            raise ModelLoadError(
                f"cannot load MLflow model '{path}': it needs module '{exc.name}', which is not "
                f"installed{hint}; install the model's requirements.txt into the image "
                "(see runtimes/mlflow/README.md)"
            ) from exc

    return load


def _downloader(artifacts: Any) -> Any:
    def download(uri: Path) -> str:
        return str(artifacts.download_artifacts(artifact_uri=str(uri)))

    return download


def _route_mlflow_logs() -> None:
    """MLflow installs its own plain-text handler; send its records through our JSON one."""
    logger = logging.getLogger("mlflow")
    logger.handlers[:] = []
    logger.propagate = True
