"""The explainer in front of a real MLflow predictor process: a regressor over named
columns (its float default output is explained; no `predict_proba`) and a classifier whose
pyfunc answers probabilities. Requests arrive as rows of objects and reach MLflow as columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.servers import start_server

pytest.importorskip("shap")
mlflow_sklearn = pytest.importorskip("mlflow.sklearn")

pytestmark = pytest.mark.heavy

COLUMNS = ["alcohol", "acidity", "sugar"]
PIP = ["mlflow", "cloudpickle", "pandas", "scikit-learn"]


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.uniform(0.0, 10.0, size=(rows, len(COLUMNS))), columns=COLUMNS)


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory):
    """(predictor, root, regressor, classifier): both models in one MLflow server."""
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression, LogisticRegression

    root = tmp_path_factory.mktemp("mlflow-explained")
    train = frame(80, seed=0)
    quality = 0.4 * train["alcohol"] - 0.2 * train["acidity"] + 0.1 * train["sugar"] + 3.0
    regressor = LinearRegression().fit(train, quality)
    mlflow_sklearn.save_model(
        regressor,
        root / "models" / "quality",
        signature=infer_signature(train, regressor.predict(train)),
        serialization_format="cloudpickle",
        pip_requirements=PIP,
    )
    grade = np.digitize(quality, np.quantile(quality, [0.33, 0.66]))
    classifier = LogisticRegression(max_iter=1000, random_state=0).fit(train, grade)
    mlflow_sklearn.save_model(
        classifier,
        root / "models" / "grade",
        signature=infer_signature(train, classifier.predict_proba(train)),
        serialization_format="cloudpickle",
        pip_requirements=PIP,
        pyfunc_predict_fn="predict_proba",
    )
    frame(40, seed=1).to_csv(root / "background.csv", index=False)
    predictor = start_server("mlflow", root / "models", timeout=120)
    yield predictor, root, regressor, classifier
    predictor.stop()


def explainer_for(serve, predictor, root, name: str):
    return serve(
        "explainer",
        root,
        f"--model_name={name}",
        f"--predictor_host=127.0.0.1:{predictor.port}",
        "--predictor_protocol=v2",
        f"--background_data={root / 'background.csv'}",
        "--max_evaluations=16",
        timeout=120,
    )


def explain(serve, mlflow_models, name: str, rows: pd.DataFrame) -> tuple[Any, dict]:
    """A fresh explainer of `name` and its V1 `:explain` answer for `rows`."""
    predictor, root, _, _ = mlflow_models
    explainer = explainer_for(serve, predictor, root, name)
    body = {"instances": rows.to_dict(orient="records")}
    response = explainer.post(f"/v1/models/{name}:explain", json=body)
    assert response.status_code == 200, response.text
    return explainer, response.json()


def test_regression_value_is_explained(serve, mlflow_models):
    _, root, regressor, _ = mlflow_models
    rows = frame(3, seed=2)
    _, doc = explain(serve, mlflow_models, "quality", rows)
    predicted = regressor.predict(rows)
    assert np.allclose(doc["predictions"], predicted, atol=1e-9)
    background = pd.read_csv(root / "background.csv")
    for index, explanation in enumerate(doc["explanations"]):
        assert explanation["feature_names"] == COLUMNS
        contributions = np.array(explanation["contributions"])
        assert contributions.shape == (3,)
        base = explanation["base_value"]
        assert base == pytest.approx(regressor.predict(background).mean())
        assert contributions.sum() + base == pytest.approx(predicted[index], abs=1e-6)
        # All coalitions enumerated: a linear model's exact SHAP values.
        exact = regressor.coef_ * (rows.to_numpy()[index] - background.to_numpy().mean(axis=0))
        assert np.allclose(contributions, exact, atol=1e-6)


def test_pyfunc_probabilities_are_explained(serve, mlflow_models):
    _, _, _, classifier = mlflow_models
    rows = frame(2, seed=3)
    explainer, doc = explain(serve, mlflow_models, "grade", rows)
    proba = classifier.predict_proba(rows)
    assert np.allclose(doc["predictions"], proba, atol=1e-9)
    for row, explanation in zip(proba, doc["explanations"], strict=True):
        contributions = np.array(explanation["contributions"])
        assert contributions.shape == (3, 3)  # classes, features
        totals = contributions.sum(axis=1) + np.array(explanation["base_value"])
        assert np.allclose(totals, row, atol=1e-6)
    # A row without one of the background's features is the client's error.
    bad = {"instances": [{"alcohol": 1.0, "acidity": 2.0}]}
    response = explainer.post("/v1/models/grade:explain", json=bad)
    assert response.status_code == 400, response.text
    assert "sugar" in response.json()["error"]
