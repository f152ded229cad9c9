"""XGBoost predictor: a Booster saved as `.json`, `.ubj` or `.bst`, or a pickled XGBModel.

The default output is KServe xgbserver's: the booster's own prediction as FP32
(probabilities for `binary:logistic`/`multi:softprob`, labels for `multi:softmax`, values
for regression). Requested outputs: `raw` (that), `margin` (untransformed scores),
`predict` (class labels for classification objectives), `predict_proba` (objectives whose
scores are probabilities) and `contributions` (SHAP values, `pred_contribs`).

Acceleration (base/accelerate.py): onnxmltools converts the booster (it needs no
scikit-learn), probed just either side of every split threshold; `margin` and
`contributions` always come from XGBoost.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from modelport.base.errors import ModelLoadError
from modelport.base.messages import TensorSpec
from modelport.base.model import load_artifact
from modelport.base.onnxgraph import Conversion, OutputMap, threshold_probes
from modelport.base.tabular import OutputFunction, TabularPredictor, import_without

# XGBoost imports scikit-learn whenever it is installed, for wrappers a booster never needs.
xgb = import_without("xgboost", "sklearn")

PICKLES = (".joblib", ".pkl", ".pickle")
# Objectives whose scores are (or map to) class probabilities, and the labels-only ones.
PROBABILISTIC = ("binary:logistic", "binary:logitraw", "multi:softprob", "multi:softmax")
LABELS_ONLY = ("binary:hinge",)


def read_booster(path: Path) -> Any:
    """Load from bytes, as KServe does: XGBoost cannot read model files under /proc paths."""
    if path.suffix.lower() in PICKLES:
        import joblib

        model = joblib.load(path)
        if isinstance(model, xgb.XGBModel):
            return model.get_booster()
        if isinstance(model, xgb.Booster):
            return model
        raise TypeError(f"it holds a {type(model).__name__}, not an XGBoost model")
    data = path.read_bytes()
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError:
        if data.lstrip()[:1] == b"{":  # JSON or UBJSON: XGBoost's own message says why
            raise
        # XGBoost 3 reads only JSON and UBJSON (both open with `{`); anything else here is
        # the binary format of XGBoost 1.x/2.0 (`binf`/`bs64` headers), which it rejects
        # with "Unknown construct" and a native stack trace.
        raise ModelLoadError(
            f"cannot load model file '{path}': it is in XGBoost's old binary format "
            f"(saved by XGBoost 1.x or 2.0), which XGBoost {xgb.__version__} cannot read; "
            "load it with the XGBoost that saved it and re-save it as .json or .ubj with "
            'booster.save_model("model.json")'
        ) from None
    return booster


# "[hh:mm:ss] /path/to/file.cc:123: " before an XGBoost error message.
_XGBOOST_PREFIX = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] [^\s:]+:\d+: ")


class XGBoostPredictor(TabularPredictor):
    runtime = "xgboost"
    extensions = (".json", ".ubj", ".bst", *PICKLES)
    plain_output = "raw"
    text_as_category = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--nthread", type=int, default=1, help="threads per prediction")

    def load(self) -> None:
        self.booster = load_artifact(read_booster, self.model_file())
        self.nthread = int(self.settings.parameters.get("nthread") or 1)
        self.booster.set_param({"nthread": self.nthread})
        learner = json.loads(self.booster.save_config())["learner"]
        self.objective: str = learner["objective"]["name"]
        # Several binary targets (multi-label) keep one probability column per label.
        params = learner["learner_model_param"]
        self.targets = int(params.get("num_target", 1))
        self.classes = int(params.get("num_class", 0))
        self.multilabel = self.targets > 1
        self.n_features = self.booster.num_features()
        self.feature_names = self.booster.feature_names
        self.functions: dict[str, OutputFunction] = {"raw": self.raw, "margin": self.margin}
        if self.objective in PROBABILISTIC:
            self.functions["predict"] = lambda features: self.labels(self.probabilities(features))
            self.functions["predict_proba"] = self.probabilities
        elif self.objective in LABELS_ONLY:
            self.functions["predict"] = lambda features: self.raw(features).astype(np.int64)
        else:
            self.functions["predict"] = self.raw

    def output_functions(self) -> dict[str, OutputFunction]:
        return self.functions

    def output_spec(self, name: str) -> TensorSpec:
        """XGBoost answers FP32; labels are INT64; multiclass scores one column per class."""
        objective = self.objective
        columns = [-1, self.targets] if self.targets > 1 else [-1]
        scores = [-1, self.classes] if objective.startswith("multi:") else columns
        if name == "raw":
            return TensorSpec(name, "FP32", columns if objective == "multi:softmax" else scores)
        if name == "margin":
            return TensorSpec(name, "FP32", scores)
        if name == "predict":
            if objective in PROBABILISTIC or objective in LABELS_ONLY:
                return TensorSpec(name, "INT64", columns)
            return TensorSpec(name, "FP32", columns)
        if name == "predict_proba":
            binary = objective.startswith("binary:") and not self.multilabel
            return TensorSpec(name, "FP32", [-1, 2] if binary else scores)
        if name == "contributions":
            spec = self.contributions_spec(self.classes if objective.startswith("multi:") else 1)
            return TensorSpec(name, "FP32", spec.shape)
        return super().output_spec(name)

    def complaint(self, exc: Exception) -> str:
        """XGBoost's errors read `[12:00:00] /src/data/data.cc:1196: Check failed: ...`
        followed by a native stack trace: the client gets the sentence only."""
        text = str(exc).split("\nStack trace", 1)[0].strip()
        return _XGBOOST_PREFIX.sub("", text)

    def dmatrix(self, features: Any) -> Any:
        """Arrays are positional (the model's names and types); DataFrames keep theirs."""
        if isinstance(features, np.ndarray):
            return xgb.DMatrix(
                features,
                feature_names=self.feature_names,
                feature_types=self.booster.feature_types,
                nthread=self.nthread,
            )
        return xgb.DMatrix(features, enable_categorical=True, nthread=self.nthread)

    def raw(self, features: Any) -> np.ndarray:
        return self.booster.predict(self.dmatrix(features)).astype(np.float32, copy=False)

    def margin(self, features: Any) -> np.ndarray:
        return self.booster.predict(self.dmatrix(features), output_margin=True)

    def probabilities(self, features: Any) -> np.ndarray:
        """`multi:softmax` and `binary:logitraw` only skip the link function: apply it."""
        if self.objective == "multi:softmax":
            margin = self.margin(features)
            exp = np.exp(margin - margin.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        if self.objective == "binary:logitraw":
            proba = (1.0 / (1.0 + np.exp(-self.margin(features)))).astype(np.float32)
        else:
            proba = self.raw(features)
        if self.objective.startswith("binary:") and not self.multilabel:
            return np.stack([1.0 - proba, proba], axis=1)
        return proba

    def labels(self, proba: np.ndarray) -> np.ndarray:
        if self.multilabel:
            return (proba > 0.5).astype(np.int64)
        return proba.argmax(axis=1).astype(np.int64)

    def contributions(self, features: Any) -> tuple[np.ndarray, list[str]]:
        values = self.booster.predict(self.dmatrix(features), pred_contribs=True)
        names = self.feature_names or [f"f{index}" for index in range(self.booster.num_features())]
        return values, names

    def conversion(self) -> Conversion | None:
        """Graph outputs: label, probabilities for classifiers; one value for regressors."""
        if self.multilabel or self.objective in LABELS_ONLY or self.objective == "binary:logitraw":
            return None
        booster, width = self.booster, self.n_features

        def convert() -> bytes:
            try:
                from onnxmltools.convert import convert_xgboost
                from onnxmltools.convert.common.data_types import FloatTensorType
            except ImportError as exc:
                raise ImportError(f"{exc}: pip install --no-deps onnxmltools") from None

            initial = [("input", FloatTensorType([None, width]))]
            return bytes(convert_xgboost(booster, initial_types=initial).SerializeToString())

        outputs: dict[str, OutputMap] = {}
        if self.objective in ("binary:logistic", "multi:softprob"):
            binary = self.objective.startswith("binary:")
            outputs["raw"] = (lambda r: r[1][:, 1]) if binary else (lambda r: r[1])
            outputs["predict_proba"] = lambda r: r[1]
            outputs["predict"] = lambda r: np.asarray(r[1]).argmax(axis=1)
        elif self.objective == "multi:softmax":
            outputs["raw"] = lambda r: r[0]
        elif self.objective not in PROBABILISTIC:
            outputs["raw"] = outputs["predict"] = lambda r: r[0]
        return Conversion(convert, outputs, np.float32, converter="onnxmltools")

    def probe_rows(self) -> np.ndarray:
        """Split thresholds from the JSON dump (XGBoost tests `x < threshold` in float32),
        and the category codes of categorical splits (a list as their condition)."""
        names = {name: index for index, name in enumerate(self.feature_names or [])}
        splits: dict[int, list[float]] = {}
        categories: dict[int, list[float]] = {}
        for text in self.booster.get_dump(dump_format="json"):
            stack = [json.loads(text)]
            while stack:
                node = stack.pop()
                if "split_condition" in node:
                    split = str(node["split"])
                    index = names.get(split)
                    if index is None and split.startswith("f") and split[1:].isdigit():
                        index = int(split[1:])
                    condition = node["split_condition"]
                    if index is not None and isinstance(condition, list):
                        categories.setdefault(index, []).extend(map(float, condition))
                    elif index is not None:
                        splits.setdefault(index, []).append(float(condition))
                stack.extend(node.get("children", []))
        return threshold_probes(splits, self.n_features or 1, categories=categories)
