"""scikit-learn predictor: a joblib/pickle file holding any estimator or Pipeline.

Outputs: `predict` (default) and, for classifiers, `predict_proba` (KServe's
PREDICT_PROBA=true makes it the default). DataFrame inputs (V1 objects, V2 `pd`) reach
Pipelines with ColumnTransformers as named columns. Tree models (forests, boosted and
single trees) explain themselves with SHAP's TreeExplainer where `shap` is installed;
it is imported on the first explanation only, so serving never pays for it.

Acceleration (base/accelerate.py): skl2onnx converts the estimator or Pipeline, without
ZipMap; tree models (which predict on float32 features) get a float32 graph probed just
either side of every split threshold, other models a float64 graph probed around the
statistics they hold (a leading scaler's means and scales).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import joblib
import numpy as np

from modelport.base.datatypes import from_numpy
from modelport.base.errors import InvalidInput
from modelport.base.messages import TensorSpec
from modelport.base.model import load_artifact
from modelport.base.onnxgraph import (
    Conversion,
    close_calls,
    first_max,
    statistic_probes,
    threshold_probes,
)
from modelport.base.tabular import OutputFunction, TabularPredictor


class SKLearnPredictor(TabularPredictor):
    runtime = "sklearn"
    extensions = (".joblib", ".pkl", ".pickle")

    def load(self) -> None:
        self.model: Any = load_artifact(joblib.load, self.model_file())
        if not hasattr(self.model, "predict"):
            raise TypeError(f"{type(self.model).__name__} has no predict method")
        self.n_features = getattr(self.model, "n_features_in_", None)
        names = getattr(self.model, "feature_names_in_", None)
        self.feature_names = [str(name) for name in names] if names is not None else None
        is_tree = hasattr(self.model, "tree_") or hasattr(self.model, "estimators_")
        self.has_explainer = is_tree and importlib.util.find_spec("shap") is not None
        self.explainer: Any = None

    @property
    def explainable(self) -> bool:
        return self.has_explainer

    def contributions(self, features: Any) -> tuple[np.ndarray, list[str]]:
        """SHAP values with the expected value last: `[rows, (classes,) features + 1]`."""
        if not self.has_explainer:
            return super().contributions(features)
        if self.explainer is None:
            import shap

            self.explainer = shap.TreeExplainer(self.model)
        values = np.asarray(self.explainer.shap_values(features))
        base = np.atleast_1d(np.asarray(self.explainer.expected_value, dtype=np.float64))
        rows = values.shape[0]
        if values.ndim == 3:  # classifiers: [rows, features, classes]
            values = values.transpose(0, 2, 1)
            bias = np.broadcast_to(base[None, :, None], (rows, len(base), 1))
        else:
            bias = np.full((rows, 1), base[0])
        names = self.feature_names or [f"f{index}" for index in range(values.shape[-1])]
        return np.concatenate([values, bias], axis=-1), names

    def output_spec(self, name: str) -> TensorSpec:
        """From the fitted (final) estimator: class labels keep their dtype, regressors
        answer FP64, one column per target when there are several."""
        estimator = getattr(self.model, "_final_estimator", self.model)
        classes: Any = getattr(estimator, "classes_", None)
        single = isinstance(classes, np.ndarray)
        if name == "predict":
            if single:
                return TensorSpec(name, _labels_datatype(classes.dtype), [-1])
            if isinstance(classes, list):  # multi-output classifier: one column per target
                dtype = np.result_type(*(np.asarray(c).dtype for c in classes))
                return TensorSpec(name, _labels_datatype(dtype), [-1, len(classes)])
            if hasattr(estimator, "cluster_centers_"):  # KMeans and kin answer int32 labels
                return TensorSpec(name, "INT32", [-1])
            targets = _targets(estimator)
            return TensorSpec(name, "FP64", [-1] if targets == 1 else [-1, targets])
        if name == "predict_proba":
            return TensorSpec(name, "FP64", [-1, len(classes) if single else -1])
        if name == "contributions":
            # SHAP gives tree classifiers one slice per class, except binary gradient
            # boosting, which explains the single log-odds margin.
            count = len(classes) if single else 1
            if count == 2 and type(estimator).__name__ == "GradientBoostingClassifier":
                count = 1
            return self.contributions_spec(count)
        return super().output_spec(name)

    def output_functions(self) -> dict[str, OutputFunction]:
        functions: dict[str, OutputFunction] = {"predict": self.model.predict}
        if hasattr(self.model, "predict_proba"):
            functions["predict_proba"] = self.model.predict_proba
        return functions

    def conversion(self) -> Conversion | None:
        model = self.model
        if not type(model).__module__.startswith("sklearn."):  # skl2onnx knows only these
            kind = type(model)
            raise TypeError(f"{kind.__module__}.{kind.__name__} is not a scikit-learn estimator")
        float_graph = bool(_trees(model))
        classifiers = [step for step in (model, _final_step(model)) if _is_classifier(step)]
        width = self.n_features

        def convert() -> bytes:
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

            kind = FloatTensorType if float_graph else DoubleTensorType
            graph = convert_sklearn(
                model,
                initial_types=[("input", kind([None, width]))],
                options={id(step): {"zipmap": False} for step in classifiers},
            )
            return bytes(graph.SerializeToString())

        outputs = {"predict": _output(0)}
        labels: tuple[str, ...] = ()
        if float_graph and _is_classifier(model) and np.ndim(model.classes_) == 1:
            # Tree models predict the first most probable class: ONNX Runtime's label breaks
            # ties (frequent with few fully grown trees) its own way.
            classes = np.asarray(model.classes_)
            outputs["predict"] = lambda results: classes[first_max(results[1])]
            if hasattr(model, "decision_function"):
                # Boosting picks labels from a float64 margin: one too near a tie for the
                # graph's float32 (1e-9 is class 1) is scikit-learn's to call.
                labels = ("predict",)
        if "predict_proba" in self.output_functions() and classifiers:
            outputs["predict_proba"] = _output(1)
        return Conversion(
            convert,
            outputs,
            np.float32 if float_graph else np.float64,
            converter="skl2onnx",
            labels=labels,
            close_calls=(lambda results: close_calls(results[1])) if labels else None,
        )

    def probe_rows(self) -> np.ndarray:
        width = self.n_features or 1
        splits: dict[int, list[float]] = {}
        for tree in _trees(self.model):
            internal = tree.children_left >= 0
            for feature, threshold in zip(
                tree.feature[internal], tree.threshold[internal], strict=True
            ):
                splits.setdefault(int(feature), []).append(float(threshold))
        if splits:
            return threshold_probes(splits, width)
        first = self.model.steps[0][1] if hasattr(self.model, "steps") else self.model
        mean, scale = getattr(first, "mean_", None), getattr(first, "scale_", None)
        if mean is None or np.shape(mean) != (width,):
            mean = scale = None
        return statistic_probes(width, mean, scale)


def _output(index: int) -> Any:
    return lambda results: results[index]


def _trees(model: Any) -> list[Any]:
    """The fitted `tree_` structures of a tree model or tree ensemble used directly."""
    if hasattr(model, "tree_"):
        return [model.tree_]
    estimators = getattr(model, "estimators_", None)
    if estimators is None:
        return []
    found = [getattr(est, "tree_", None) for est in np.ravel(np.asarray(estimators, dtype=object))]
    return found if found and all(tree is not None for tree in found) else []


def _final_step(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else None


def _is_classifier(model: Any) -> bool:
    return model is not None and hasattr(model, "classes_") and hasattr(model, "predict_proba")


def _labels_datatype(dtype: np.dtype) -> str:
    """Class labels: their own datatype; text (object) labels are BYTES."""
    try:
        return from_numpy(dtype)
    except InvalidInput:
        return "BYTES"


def _targets(estimator: Any) -> int:
    """How many targets a regressor predicts (trees say so; linear models by `coef_`)."""
    count = getattr(estimator, "n_outputs_", None)
    if count is None:
        coef = getattr(estimator, "coef_", None)
        count = coef.shape[0] if coef is not None and np.ndim(coef) == 2 else 1
    return int(count)
