"""The explainer process in front of a real sklearn predictor process (LogisticRegression,
which has no native explainer): KernelSHAP of its class probabilities over V1 and V2,
`:predict` forwarded, bad requests 400, the predictor down 502."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from tests.models import IRIS_ROWS, iris_logistic, iris_v2_body
from tests.servers import ServerProcess, free_port, start_server, triton_infer

pytest.importorskip("shap")


def start_explainer(
    model_dir, predictor_host: str, *flags: str, name: str = "iris"
) -> ServerProcess:
    return start_server(
        "explainer",
        model_dir,
        f"--model_name={name}",
        f"--predictor_host={predictor_host}",
        *flags,
        timeout=120,
    )


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """(explainer, predictor, model, root): the two processes and the model behind them.

    The predictor also serves `labels`, a classifier without probabilities."""
    from sklearn.datasets import load_iris
    from sklearn.svm import LinearSVC

    root = tmp_path_factory.mktemp("iris")
    iris_logistic(root / "models" / "iris")
    x, y = load_iris(return_X_y=True)
    (root / "models" / "labels").mkdir()
    joblib.dump(LinearSVC(random_state=0).fit(x, y), root / "models" / "labels" / "model.joblib")
    header = "sepal_length,sepal_width,petal_length,petal_width"
    np.savetxt(root / "background.csv", x[::3], delimiter=",", header=header, comments="")
    predictor = start_server("sklearn", root / "models")
    explainer = None
    try:
        explainer = start_explainer(
            root,
            f"127.0.0.1:{predictor.port}",
            f"--background_data={root / 'background.csv'}",
            "--background_samples=20",
            "--max_evaluations=32",
        )
        yield explainer, predictor, joblib.load(root / "models" / "iris" / "model.joblib"), root
    finally:
        if explainer is not None:
            explainer.stop()
        predictor.stop()


def test_v1_explanations_add_up_to_probabilities(iris):
    explainer, _, model, _ = iris
    response = explainer.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    proba = model.predict_proba(np.array(IRIS_ROWS))
    assert np.allclose(body["predictions"], proba, atol=1e-9)
    assert len(body["explanations"]) == 2
    for row, explanation in zip(proba, body["explanations"], strict=True):
        assert explanation["feature_names"] == [
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        ]
        contributions = np.array(explanation["contributions"])  # [classes][features]
        assert contributions.shape == (3, 4)
        assert len(explanation["base_value"]) == 3
        totals = contributions.sum(axis=1) + np.array(explanation["base_value"])
        assert np.allclose(totals, row, atol=1e-6)


def test_explanations_are_reproducible(iris):
    explainer, _, _, _ = iris
    first = explainer.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS}).json()
    again = explainer.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS[1:]}).json()
    assert again["explanations"][0] == first["explanations"][1]


def test_v2_contributions_output_with_other_outputs(iris):
    explainer, _, model, _ = iris
    payload = iris_v2_body("x", "FP64", outputs=["contributions", "predict"])
    response = explainer.post("/v2/models/iris/infer", json=payload)
    assert response.status_code == 200, response.text
    contributions, predict = response.json()["outputs"]
    assert contributions["name"] == "contributions"
    values = np.array(contributions["data"]).reshape(contributions["shape"])
    assert values.shape == (2, 3, 5)  # rows, classes, four features then the base value
    proba = model.predict_proba(np.array(IRIS_ROWS))
    assert np.allclose(values.sum(axis=-1), proba, atol=1e-6)
    assert predict["data"] == [1, 1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_contributions_through_tritonclient(iris, protocol):
    explainer, _, model, _ = iris
    rows = np.array(IRIS_ROWS, dtype=np.float32)
    result = triton_infer(
        explainer, "iris", [("x", rows, "FP32", True)], {"contributions": True}, protocol
    )
    values = result.as_numpy("contributions")
    assert values.shape == (2, 3, 5)
    assert np.allclose(values.sum(axis=-1), model.predict_proba(rows), atol=1e-5)


def test_predict_and_plain_v2_are_forwarded(iris):
    explainer, _, _, _ = iris
    response = explainer.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [1, 1]
    payload = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROWS[0]}],
        "outputs": [{"name": "predict_proba"}],
    }
    response = explainer.post("/v2/models/iris/infer", json=payload)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 3]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"instances": [[1.0, 2.0, 3.0]]}, "expects 4 features"),
        ({"instances": [["a", "b", "c", "d"]]}, "numeric features only"),
        ({"rows": [[1.0, 2.0, 3.0, 4.0]]}, "instances"),
        ({"instances": [{"sepal_length": 1.0, "width": 2.0}]}, "missing: sepal_width"),
    ],
)
def test_bad_request_is_400(iris, body, complaint):
    explainer, _, _, _ = iris
    response = explainer.post("/v1/models/iris:explain", json=body)
    assert response.status_code == 400, response.text
    assert complaint in response.json()["error"]


def test_labels_are_not_explained(iris):
    _, predictor, _, root = iris
    explainer = start_explainer(
        root, f"127.0.0.1:{predictor.port}", "--background=[[5.0, 3.0, 4.0, 1.0]]", name="labels"
    )
    try:
        response = explainer.post("/v1/models/labels:explain", json={"instances": IRIS_ROWS})
        assert response.status_code == 501, response.text
        assert "labels" in response.json()["error"]
    finally:
        explainer.stop()


def test_predictor_down_is_502(tmp_path):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    explainer = start_explainer(tmp_path, host, "--background=[[5.0, 3.0, 4.0, 1.0]]")
    try:
        response = explainer.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS})
        assert response.status_code == 502, response.text
        assert host in response.json()["error"]
    finally:
        explainer.stop()


def test_explainer_without_background_fails_to_start(tmp_path):
    server = start_server(
        "explainer", tmp_path, "--model_name=iris", "--predictor_host=127.0.0.1:1", wait=False
    )
    assert server.process.wait(120) == 1
    assert "background" in server.log()


def test_too_many_rows_for_one_explanation_is_400(iris):
    explainer, _, _, _ = iris
    body = {"instances": [IRIS_ROWS[0]] * 60_000}
    response = explainer.post("/v1/models/iris:explain", json=body)
    assert response.status_code == 400, response.text
    assert "send fewer rows" in response.json()["error"]


def in_process_explainer(predictor: Any, root: Path) -> Any:
    """A loaded Explainer in this process, in front of the fixture's real predictor."""
    from modelport.base.model import ModelSettings
    from modelport.runtimes.explainer import model as explainer_model

    options = {
        "predictor_host": f"127.0.0.1:{predictor.port}",
        "background_data": str(root / "background.csv"),
        "background_samples": 20,
        "max_evaluations": 32,
    }
    explainer = explainer_model.Explainer(ModelSettings("iris", root, parameters=options))
    explainer.load()
    return explainer


async def test_large_batches_reach_the_predictor_in_parts(iris, monkeypatch):
    """In-process explainer, real predictor: parts give the answer one request gives."""
    from modelport.base.messages import InferRequest, Tensor
    from modelport.runtimes.explainer import model as explainer_model

    server, predictor, _, root = iris
    whole = server.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS}).json()
    explainer = in_process_explainer(predictor, root)
    sent: list[int] = []
    forward = explainer.scorer.infer

    async def counting(model, request, headers=None):
        sent.append(request.inputs[0].data.shape[0])
        return await forward(model, request, headers)

    monkeypatch.setattr(explainer.scorer, "infer", counting)
    monkeypatch.setattr(explainer_model, "CHUNK_ELEMENTS", 1000)
    try:
        parts = await explainer.explain(InferRequest([Tensor("x", np.array(IRIS_ROWS))]))
    finally:
        explainer.unload()
        await explainer.scorer.aclose()
    assert len(sent) > 2
    assert max(sent) * 4 <= 1000
    assert np.allclose(parts["predictions"], whole["predictions"], atol=1e-12)
    for mine, theirs in zip(parts["explanations"], whole["explanations"], strict=True):
        assert np.allclose(mine["contributions"], theirs["contributions"], atol=1e-12)


async def test_an_unloaded_explainer_still_answers_requests_already_holding_it(iris):
    """Requests in flight keep the predictor they started on; unload used to shut the
    explainer's math thread down, and such a request failed with a 500."""
    from modelport.base.messages import InferRequest, Tensor

    _, predictor, _, root = iris
    explainer = in_process_explainer(predictor, root)
    try:
        explainer.unload()
        answer = await explainer.explain(InferRequest([Tensor("x", np.array(IRIS_ROWS))]))
    finally:
        await explainer.scorer.aclose()
    assert len(answer["explanations"]) == len(IRIS_ROWS)
