"""sklearn tree models explain themselves through SHAP (when `shap` is installed)."""

from __future__ import annotations

import joblib
import numpy as np
import pytest

from tests.models import IRIS_ROWS, iris_v2_body
from tests.servers import start_server

pytest.importorskip("shap")


@pytest.fixture(scope="module")
def forests(tmp_path_factory):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    x, y = load_iris(return_X_y=True)
    root = tmp_path_factory.mktemp("forests")
    for name, model in (
        ("classifier", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)),
        ("regressor", RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0)),
    ):
        (root / name).mkdir()
        joblib.dump(model.fit(x, y), root / name / "model.joblib")
    server = start_server("sklearn", root)
    yield server, root
    server.stop()


def test_classifier_explanations_add_up_to_probabilities(forests):
    server, root = forests
    response = server.post("/v1/models/classifier:explain", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == [1, 1]
    proba = joblib.load(root / "classifier" / "model.joblib").predict_proba(np.array(IRIS_ROWS))
    assert len(body["explanations"]) == 2
    for row, explanation in zip(proba, body["explanations"], strict=True):
        assert explanation["feature_names"] == ["f0", "f1", "f2", "f3"]
        contributions = np.array(explanation["contributions"])  # [classes][features]
        assert contributions.shape == (3, 4)
        totals = contributions.sum(axis=1) + np.array(explanation["base_value"])
        assert np.allclose(totals, row, atol=1e-6)


def test_regressor_explanations_over_v2_output(forests):
    server, _ = forests
    payload = iris_v2_body("x", "FP64", outputs=["contributions", "predict"])
    response = server.post("/v2/models/regressor/infer", json=payload)
    assert response.status_code == 200, response.text
    contributions, predictions = response.json()["outputs"]
    values = np.array(contributions["data"]).reshape(contributions["shape"])
    assert values.shape == (2, 5)  # four features, then the expected value
    assert np.allclose(values.sum(axis=1), predictions["data"], atol=1e-6)
