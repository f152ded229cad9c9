"""scikit-learn predictor: a joblib/pickle file holding any estimator or Pipeline.

Outputs: `predict` (default) and, for classifiers, `predict_proba` (KServe's
PREDICT_PROBA=true makes it the default). DataFrame inputs (V1 objects, V2 `pd`) reach
Pipelines with ColumnTransformers as named columns.
"""

from __future__ import annotations

from typing import Any

import joblib

from modelport.base.model import load_artifact
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

    def output_functions(self) -> dict[str, OutputFunction]:
        functions: dict[str, OutputFunction] = {"predict": self.model.predict}
        if hasattr(self.model, "predict_proba"):
            functions["predict_proba"] = self.model.predict_proba
        return functions
