"""Shared behaviour of the tabular runtimes (sklearn, XGBoost, LightGBM).

They all take a 2-D feature matrix or a DataFrame and offer a few named outputs
(`predict`, `predict_proba`, ...). This class turns an InferRequest into that input,
checks the feature count, dispatches requested outputs and maps framework input errors
to 400s, so each framework module only loads its model and names its output functions.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import sys
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from modelport.base.errors import (
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelportError,
    NotAvailable,
)
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import SERVING, Predictor
from modelport.base.protocol.v1 import DEFAULT_INPUT

if TYPE_CHECKING:
    from modelport.base.accelerate import Accelerator
    from modelport.base.onnxgraph import Conversion

log = logging.getLogger("modelport.accelerate")

OutputFunction = Callable[[Any], np.ndarray]
DEFAULT_OUTPUT = "output-0"
# The predictor that speaks for each model name in `modelport_model_engine` (see
# TabularPredictor._report_engine); weak, so an unloaded predictor is still freed.
_ENGINE_REPORTERS: weakref.WeakValueDictionary[str, TabularPredictor] = (
    weakref.WeakValueDictionary()
)


@functools.cache
def predict_proba_by_default() -> bool:
    """KServe's deploy-time switch: PREDICT_PROBA=true answers probabilities by default.

    Read once per process: it is set on the deployment, not per request."""
    return os.environ.get("PREDICT_PROBA", "false").strip().lower() == "true"


def import_without(name: str, *hidden: str) -> ModuleType:
    """Import framework `name` while the optional modules `hidden` look uninstalled.

    XGBoost and LightGBM import scikit-learn eagerly whenever it is installed, only for
    their sklearn wrappers; serving a booster needs none of it (about a second and tens of
    MB per process). Modules already imported are left alone, and `hidden` stays importable
    afterwards (a pickle that needs scikit-learn still imports it when unpickled). Call it
    at module import time, before any loading thread runs.
    """
    if name in sys.modules:
        return sys.modules[name]
    hiding = [module for module in hidden if module not in sys.modules]
    for module in hiding:
        sys.modules[module] = None  # type: ignore[assignment]  # `import module` -> ImportError
    try:
        return importlib.import_module(name)
    finally:
        for module in hiding:
            if module in sys.modules and sys.modules[module] is None:
                del sys.modules[module]


class TabularPredictor(Predictor):
    """A predictor over a feature matrix with named output functions."""

    #: Feature names the model was trained with, when known (DataFrame inputs align to them).
    feature_names: list[str] | None = None
    #: Number of features the model expects, when known.
    n_features: int | None = None
    #: Rows of a feature matrix are predicted independently, so concurrent requests are
    #: merged by default (never waiting for a batch to fill: `max_batch_time` is 0).
    default_max_batch_size: ClassVar[int] = 32
    #: Output answered when the request names none and PREDICT_PROBA does not apply.
    plain_output: ClassVar[str] = "predict"
    #: Text columns of DataFrame inputs become pandas categoricals (XGBoost and LightGBM
    #: take categorical features that way and re-code them to the model's categories).
    text_as_category: ClassVar[bool] = False
    #: The ONNX Runtime engine that may take over (see base/accelerate.py), once loaded.
    accelerator: Accelerator | None = None
    _serving_outputs: tuple[dict[str, OutputFunction], str] | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--accelerate",
            choices=("auto", "off"),
            default="auto",
            help="auto: after start-up, convert the model to ONNX and serve through ONNX "
            "Runtime where it answers the same as the model and faster; off: always native",
        )
        parser.add_argument(
            "--accelerate_tolerance",
            type=float,
            default=1e-5,
            help="largest score difference (absolute and relative) the ONNX graph may have "
            "from the native model on the verification rows; labels must match exactly",
        )

    # --- acceleration: what a runtime contributes ------------------------------------------

    def conversion(self) -> Conversion | None:
        """How to convert this model to ONNX; None when the runtime cannot."""
        return None

    def probe_rows(self) -> np.ndarray:
        """Verification rows made from the model itself (thresholds, statistics)."""
        from modelport.base.onnxgraph import statistic_probes

        return statistic_probes(self.n_features or 1)

    # --- acceleration: shared -------------------------------------------------------------

    def loaded(self) -> None:
        """Serve natively now; convert, verify and switch in the background."""
        mode = str(self.settings.parameters.get("accelerate") or "auto").lower()
        if mode not in ("auto", "off"):
            raise ModelLoadError(f"accelerate must be 'auto' or 'off', got '{mode}'")
        self.accelerate_mode = mode
        conversion, reason = None, "no ONNX conversion for this model"
        try:
            conversion = self.conversion() if mode == "auto" and self.n_features else None
        except (TypeError, ValueError) as exc:
            reason = f"cannot convert: {exc}"
        if mode == "auto" and conversion is None:
            self.accelerate_reason = reason
            log.warning("serving natively", extra={"model": self.name, "reason": reason})
        if conversion is not None:
            from modelport.base.accelerate import Accelerator

            self.accelerator = Accelerator(
                self.name,
                self.model_file(),
                conversion,
                self.probe_rows,
                lambda name, rows: np.asarray(self.all_outputs()[name](rows)),
                self.default_output(),
                self.settings.parameters,
                on_change=self._report_engine,
            )
            self.accelerator.start(after=SERVING)
        _ENGINE_REPORTERS[self.name] = self  # this predictor now speaks for the model
        self._report_engine()

    def unload(self) -> None:
        if self.accelerator is not None:
            self.accelerator.cancel()
        self._report_engine(unloaded=True)
        if _ENGINE_REPORTERS.get(self.name) is self:
            del _ENGINE_REPORTERS[self.name]

    def engine(self) -> str:
        """Which engine serves: `onnxruntime` once a verified graph serves some batch sizes."""
        return "native" if self.accelerator is None else self.accelerator.engine_name

    def metadata_parameters(self) -> dict[str, Any]:
        mode = getattr(self, "accelerate_mode", "auto")
        if self.accelerator is not None:
            status = self.accelerator.status
        elif mode == "off":
            status = "off"
        else:
            status = f"native: {getattr(self, 'accelerate_reason', 'no ONNX conversion')}"
        return {"engine": self.engine(), "accelerate": status}

    def _report_engine(self, unloaded: bool = False) -> None:
        """The `modelport_model_engine` gauge: 1 for each engine serving some requests.
        Only the model's latest loaded predictor reports: a reload swaps the new one in
        before the old one unloads, and the old one must not then zero the gauge."""
        if _ENGINE_REPORTERS.get(self.name) is not self:
            return
        from modelport.base.metrics import process_metrics

        gauge = process_metrics().engine
        onnx = not unloaded and self.engine() == "onnxruntime"
        everything = onnx and self.accelerator is not None and self.accelerator.serves_all()
        gauge.labels(self.name, "onnxruntime").set(int(onnx))
        gauge.labels(self.name, "native").set(int(not unloaded and not everything))

    def output_functions(self) -> dict[str, OutputFunction]:
        """Output name -> function of the features. Subclasses add to `predict`."""
        raise NotImplementedError

    def contributions(self, features: Any) -> tuple[np.ndarray, list[str]]:
        """Per-row feature contributions and the feature names, for explanations.

        Shape `[rows, features + 1]`, or `[rows, classes, features + 1]` for multiclass
        models, with the bias (the expected value) last, so each row sums to the raw margin.
        Runtimes with a native explainer override it; by default a model has none.
        """
        raise NotAvailable(f"model '{self.name}' has no explainer")

    @property
    def explainable(self) -> bool:
        """Whether this runtime implements `contributions`."""
        return type(self).contributions is not TabularPredictor.contributions

    def all_outputs(self) -> dict[str, OutputFunction]:
        """`output_functions()` plus `contributions` (V2 explanations) when explainable."""
        functions = dict(self.output_functions())
        if self.explainable:
            functions.setdefault("contributions", lambda features: self.contributions(features)[0])
        return functions

    def inputs(self) -> list[TensorSpec]:
        if self.feature_names:
            return [TensorSpec(name, "BYTES", [-1]) for name in self.feature_names]
        return [TensorSpec(DEFAULT_INPUT, "FP64", [-1, self.n_features or -1])]

    def outputs(self) -> list[TensorSpec]:
        return [self.output_spec(name) for name in self.all_outputs()]

    def output_spec(self, name: str) -> TensorSpec:
        """What output `name` answers (datatype, rank, fixed dims) for metadata; runtimes
        describe their own from the loaded model. Unknown here: a FP64 matrix."""
        return TensorSpec(name, "FP64", [-1, -1])

    def contributions_spec(self, classes: int) -> TensorSpec:
        """`contributions`: `[rows, features + 1]`, or `[rows, classes, features + 1]`."""
        width = self.n_features + 1 if self.n_features else -1
        shape = [-1, classes, width] if classes > 1 else [-1, width]
        return TensorSpec("contributions", "FP64", shape)

    def default_output(self) -> str:
        functions = self.output_functions()
        if predict_proba_by_default() and "predict_proba" in functions:
            return "predict_proba"
        return self.plain_output

    # --- request -> features --------------------------------------------------------

    def features(self, request: InferRequest) -> Any:
        """One tensor -> 2-D ndarray; `pd` content type or several inputs -> DataFrame."""
        inputs = request.inputs
        if len(inputs) == 1 and request.content_type != "pd":
            return self.matrix(inputs[0])
        return self.dataframe(inputs)

    def matrix(self, tensor: Tensor) -> np.ndarray:
        data = tensor.data
        if data.ndim == 1:
            data = data.reshape(1, -1)
        if data.ndim != 2:
            raise InvalidInput(
                f"input '{tensor.name}': expected a 2-D [rows, features] tensor, got shape "
                f"{tensor.shape}"
            )
        if self.n_features is not None and data.shape[1] != self.n_features:
            raise InvalidInput(
                f"input '{tensor.name}': model expects {self.n_features} features, "
                f"got {data.shape[1]}"
            )
        return data

    def dataframe(self, inputs: list[Tensor]) -> Any:
        """One column per input (OIP `pd` content type), aligned to the model's features."""
        import pandas as pd

        frame = pd.DataFrame(column_arrays(inputs))
        if self.feature_names:
            missing = [name for name in self.feature_names if name not in frame.columns]
            if missing:
                raise InvalidInput(f"missing feature column(s): {', '.join(missing)}")
            frame = frame[self.feature_names]
        if self.text_as_category:
            text = [name for name in frame.columns if _is_text(frame[name].dtype)]
            if text:
                frame = frame.astype(dict.fromkeys(text, "category"))
        return frame

    # --- inference -------------------------------------------------------------------

    def serving_outputs(self) -> tuple[dict[str, OutputFunction], str]:
        """Every output function by name (`output-0` too, the name the default output is
        answered under) and the default output's name. Fixed once the model is loaded, so
        built once: requests only look them up."""
        cached = self._serving_outputs
        if cached is None:
            functions = self.all_outputs()
            default = self.default_output()
            functions.setdefault(DEFAULT_OUTPUT, functions[default])
            cached = self._serving_outputs = (functions, default)
        return cached

    def infer(self, request: InferRequest) -> InferResponse:
        functions, default = self.serving_outputs()
        if request.outputs:
            wanted = [output.name for output in request.outputs]
            for name in wanted:
                if name not in functions:
                    offered = ", ".join(name for name in functions if name != DEFAULT_OUTPUT)
                    raise InvalidInput(
                        f"unknown output '{name}'; model '{self.name}' offers: {offered}"
                    )
        else:
            wanted = [DEFAULT_OUTPUT]
        features = self.features(request)
        if self.accelerator is not None:
            names = [default if name == DEFAULT_OUTPUT else name for name in wanted]
            answers = self.accelerator.answer(features, names)
            if answers is not None:
                outputs = [
                    Tensor(n, as_object_text(a)) for n, a in zip(wanted, answers, strict=True)
                ]
                return InferResponse(outputs=outputs, id=request.id)
        outputs = [Tensor(name, self.call(functions[name], features)) for name in wanted]
        return InferResponse(outputs=outputs, id=request.id)

    def explain(self, request: InferRequest) -> dict[str, Any]:
        """The predictions plus, per row, each feature's contribution and the base value.

        Shape shared with the explainer component: `{"predictions": [...], "explanations":
        [{"feature_names", "contributions", "base_value"}, ...]}`, one per row; multiclass
        models give `[classes][features]` contributions and one base value per class.
        """
        if not self.explainable:
            raise NotAvailable(f"model '{self.name}' has no explainer")
        features = self.features(request)
        predictions = self.call(self.all_outputs()[self.default_output()], features)
        values, names = self.guarded(self.contributions, features)
        explanations = [
            {
                "feature_names": names,
                "contributions": row[..., :-1].tolist(),
                "base_value": row[..., -1].tolist(),
            }
            for row in np.asarray(values)
        ]
        encoded = self.encode_v1(InferResponse([Tensor(DEFAULT_OUTPUT, predictions)]))
        return {"predictions": encoded["predictions"], "explanations": explanations}

    def call(self, function: OutputFunction, features: Any) -> np.ndarray:
        """Run a framework function: its input complaints are 400s, anything else a 500."""
        return as_object_text(np.asarray(self.guarded(function, features)))

    def complaint(self, exc: Exception) -> str:
        """A framework's refusal of an input, as the client reads it (runtimes whose
        messages carry native stack traces or source locations trim them here)."""
        return str(exc)

    def guarded(self, function: Callable[[Any], Any], features: Any) -> Any:
        """`function(features)` with input complaints as 400s and anything else as a 500.

        ValueError is how scikit-learn, XGBoost and pandas refuse an input. A KeyError or
        TypeError is the input's fault only when that shows: a column the request lacks,
        or text sent to a model that cannot take it; otherwise it is a bug in the model.
        """
        try:
            return function(features)
        except ModelportError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, ValueError) or _input_at_fault(exc, features):
                what = f"no column {exc}" if isinstance(exc, KeyError) else self.complaint(exc)
                raise InvalidInput(f"model '{self.name}' rejected the input: {what}") from exc
            raise InferenceFailed(
                f"model '{self.name}' failed: {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:
            raise InferenceFailed(
                f"model '{self.name}' failed: {type(exc).__name__}: {exc}"
            ) from exc


def _input_at_fault(exc: TypeError | KeyError, features: Any) -> bool:
    """A KeyError naming a column the DataFrame lacks; a TypeError on text features."""
    if isinstance(exc, KeyError):
        columns = getattr(features, "columns", None)
        key = exc.args[0] if exc.args else None
        return columns is not None and isinstance(key, str) and key not in columns
    dtypes = getattr(features, "dtypes", None)
    if dtypes is None:  # an ndarray
        return bool(features.dtype.kind in "OUS")
    return any(_is_text(dtype) or str(dtype) == "category" for dtype in dtypes)


def _is_text(dtype: Any) -> bool:
    """Object or pandas string columns (pandas 3 infers `str` for text)."""
    import pandas as pd

    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def column_arrays(inputs: list[Tensor]) -> dict[str, np.ndarray]:
    """One 1-D column per input (OIP `pd`): `[rows, 1]` tensors flattened, equal row
    counts checked, bytes (from binary BYTES) decoded to text as DataFrames want."""
    columns: dict[str, np.ndarray] = {}
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
        columns[tensor.name] = as_text(data)
    return columns


def as_object_text(values: np.ndarray) -> np.ndarray:
    """Fixed-width numpy text (`<U7`, class labels fitted from a str array) as the object
    array of str that BYTES tensors hold: V1's JSON writer takes no fixed-width text."""
    return values.astype(object) if values.dtype.kind in "SU" else values


def as_text(values: np.ndarray) -> np.ndarray:
    """Bytes items (V2 binary BYTES) to str; anything else unchanged."""
    if values.dtype.kind == "S" or (
        values.dtype == object and any(isinstance(v, bytes) for v in values.flat)
    ):
        out = np.empty(values.size, dtype=object)
        out[:] = [v.decode() if isinstance(v, bytes) else v for v in values.flat]
        return out.reshape(values.shape)
    return values
