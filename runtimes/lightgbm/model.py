"""LightGBM predictor: a Booster saved as text (`.txt`, `.bst`) or a pickled LGBMModel.

The default output is KServe lgbserver's: `Booster.predict` as is (probabilities for
`binary`/`multiclass`, values for regression), FP64 as LightGBM computes it. Requested
outputs: `raw` (that), `margin` (`raw_score`), `predict` (class labels for classification
objectives), `predict_proba` and `contributions` (SHAP values, `pred_contrib`).

Acceleration (base/accelerate.py): onnxmltools converts the booster (it needs no
scikit-learn), probed just either side of every split threshold. LightGBM compares float64
features with float64 thresholds and the graph works in float32, so only requests whose
values are exactly float32 (V2 FP32 tensors, small integers) take the graph.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelport.base.datatypes import from_numpy
from modelport.base.errors import ModelLoadError
from modelport.base.messages import TensorSpec
from modelport.base.model import load_artifact
from modelport.base.onnxgraph import (
    Conversion,
    OutputMap,
    close_calls,
    exact_leq_thresholds,
    threshold_probes,
)
from modelport.base.tabular import OutputFunction, TabularPredictor, import_without

# LightGBM imports scikit-learn whenever it is installed, for wrappers a booster never needs.
lgb = import_without("lightgbm", "sklearn")

PICKLES = (".joblib", ".pkl", ".pickle")
CLASSIFIERS = ("binary", "multiclass", "multiclassova")
# LightGBM reads every feature value of magnitude up to this float32 as 0 (kZeroThreshold).
ZERO_THRESHOLD = float(np.float32(1e-35))


def read_booster(path: Path) -> tuple[Any, np.ndarray | None]:
    """The booster (read as text, as KServe reads bytes) and a wrapper's class labels."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise ModelLoadError(
            f"'{path.name}' is a JSON dump (Booster.dump_model), which LightGBM cannot load: "
            "save the model with Booster.save_model (text, .txt or .bst)"
        )
    if suffix in PICKLES:
        import joblib

        model = joblib.load(path)
        if isinstance(model, lgb.LGBMModel):
            return model.booster_, getattr(model, "classes_", None)
        if isinstance(model, lgb.Booster):
            return model, None
        raise TypeError(f"it holds a {type(model).__name__}, not a LightGBM model")
    return lgb.Booster(model_str=path.read_text()), None


class LightGBMPredictor(TabularPredictor):
    runtime = "lightgbm"
    extensions = (".txt", ".bst", ".json", *PICKLES)
    plain_output = "raw"
    text_as_category = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--nthread", type=int, default=1, help="threads per prediction")

    def load(self) -> None:
        self.booster, self.classes = load_artifact(read_booster, self.model_file())
        self.nthread = int(self.settings.parameters.get("nthread") or 1)
        self.objective = str(self.booster.params.get("objective") or "").split(" ")[0]
        self.n_features = self.booster.num_feature()
        names = self.booster.feature_name()
        # A booster trained on an array names its features `Column_0`...: no client knows
        # those, so such a model takes its columns by position.
        made_up = names == [f"Column_{index}" for index in range(len(names))]
        self.feature_names = None if made_up else names
        self.functions: dict[str, OutputFunction] = {"raw": self.raw, "margin": self.margin}
        if self.objective in CLASSIFIERS:
            self.functions["predict"] = self.labels
            self.functions["predict_proba"] = self.probabilities
        else:
            self.functions["predict"] = self.raw

    def output_functions(self) -> dict[str, OutputFunction]:
        return self.functions

    def output_spec(self, name: str) -> TensorSpec:
        """LightGBM answers FP64, one column per class for multiclass; labels keep the
        wrapper's class dtype (INT64 indices for a bare booster)."""
        classes = self.booster.num_model_per_iteration()
        scores = [-1, classes] if classes > 1 else [-1]
        if name in ("raw", "margin"):
            return TensorSpec(name, "FP64", scores)
        if name == "predict":
            if self.objective not in CLASSIFIERS:
                return TensorSpec(name, "FP64", scores)
            labels = np.dtype(np.int64) if self.classes is None else self.classes.dtype
            return TensorSpec(name, "BYTES" if labels.kind in "OUS" else from_numpy(labels), [-1])
        if name == "predict_proba":
            return TensorSpec(name, "FP64", [-1, max(classes, 2)])
        if name == "contributions":
            return self.contributions_spec(classes)
        return super().output_spec(name)

    def raw(self, features: Any, **options: Any) -> np.ndarray:
        return self.booster.predict(features, num_threads=self.nthread, **options)

    def margin(self, features: Any) -> np.ndarray:
        return self.raw(features, raw_score=True)

    def probabilities(self, features: Any) -> np.ndarray:
        proba = self.raw(features)
        return np.stack([1.0 - proba, proba], axis=1) if proba.ndim == 1 else proba

    def labels(self, features: Any) -> np.ndarray:
        index = self.probabilities(features).argmax(axis=1)
        return index if self.classes is None else np.asarray(self.classes)[index]

    def contributions(self, features: Any) -> tuple[np.ndarray, list[str]]:
        values = self.raw(features, pred_contrib=True)
        classes = self.booster.num_model_per_iteration()
        if classes > 1:  # LightGBM puts the classes side by side: [rows, classes * (f + 1)]
            values = values.reshape(len(values), classes, -1)
        return values, list(self.booster.feature_name())

    def conversion(self) -> Conversion | None:
        """Graph outputs: label, probabilities for classifiers; one value for regressors."""
        booster, width = self.booster, self.n_features
        classes = None if self.classes is None else np.asarray(self.classes)

        def convert() -> bytes:
            try:
                from onnxmltools.convert import convert_lightgbm
                from onnxmltools.convert.common.data_types import FloatTensorType
            except ImportError as exc:
                raise ImportError(f"{exc}: pip install --no-deps onnxmltools") from None

            initial = [("input", FloatTensorType([None, width]))]
            graph = convert_lightgbm(booster, initial_types=initial, zipmap=False)
            graph_bytes = bytes(graph.SerializeToString())
            return exact_leq_thresholds(graph_bytes, self.splits(), zero=ZERO_THRESHOLD)

        outputs: dict[str, OutputMap] = {}
        labels: tuple[str, ...] = ()
        if self.objective in CLASSIFIERS:
            labels = ("predict",)  # argmax of float64 scores: close calls go native
            binary = booster.num_model_per_iteration() == 1
            outputs["raw"] = (lambda r: r[1][:, 1]) if binary else (lambda r: r[1])
            outputs["predict_proba"] = lambda r: r[1]
            if classes is None:
                outputs["predict"] = lambda r: np.asarray(r[1]).argmax(axis=1)
            else:
                outputs["predict"] = lambda r: classes[np.asarray(r[1]).argmax(axis=1)]
        else:
            outputs["raw"] = outputs["predict"] = lambda r: r[0]
        return Conversion(
            convert,
            outputs,
            np.float32,
            float32_only=True,
            converter="onnxmltools",
            labels=labels,
            close_calls=(lambda r: close_calls(r[1])) if labels else None,
        )

    def probe_rows(self) -> np.ndarray:
        width = self.n_features or 1
        return threshold_probes(self.splits(), width, categories=self.categories())

    def splits(self) -> dict[int, list[float]]:
        """Numeric split thresholds from the model dump (LightGBM tests `x <= threshold`)."""
        return self._split_values("<=", lambda threshold: [float(threshold)])

    def categories(self) -> dict[int, list[float]]:
        """The category codes each categorical feature's splits test (`1||3||5`)."""
        return self._split_values("==", lambda codes: [float(c) for c in str(codes).split("||")])

    def _split_values(
        self, decision: str, values: Callable[[Any], list[float]]
    ) -> dict[int, list[float]]:
        """Per feature, the values of the splits with this decision type."""
        found: dict[int, list[float]] = {}
        for tree in self.booster.dump_model()["tree_info"]:
            stack = [tree["tree_structure"]]
            while stack:
                node = stack.pop()
                if "split_feature" in node:
                    if node.get("decision_type") == decision:
                        feature = int(node["split_feature"])
                        found.setdefault(feature, []).extend(values(node["threshold"]))
                    stack += [node["left_child"], node["right_child"]]
        return found
