"""Transformer and predictor as two real processes: V1 and V2 through the transformer for
each --predictor_protocol, the predictor's errors passed through, readiness, custom hooks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models import IRIS_ROWS, constant_model, iris_logistic
from tests.servers import free_port, start_server, triton_infer
from tests.transformer.components import start_component, start_transformer

PROTOCOLS = ["v1", "v2"]
V2_IRIS = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": IRIS_ROWS}]}


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    server = start_server(
        "sklearn", iris_logistic(tmp_path_factory.mktemp("iris")), "--model_name=iris"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module", params=PROTOCOLS)
def through(request, iris):
    """A pass-through transformer named like the predictor's model, one per protocol."""
    server = start_transformer(
        f"127.0.0.1:{iris.port}", "--model_name=iris", f"--predictor_protocol={request.param}"
    )
    yield server
    server.stop()


def test_v1_through_the_transformer(through):
    response = through.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [1, 1]}


def test_v2_through_the_transformer(through):
    response = through.post("/v2/models/iris/infer", json={**V2_IRIS, "id": "r-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "iris" and body["id"] == "r-1"
    assert body["outputs"][0]["data"] == [1, 1]


def test_v2_binary_through_the_transformer(through):
    from sklearn.datasets import load_iris

    rows, labels = load_iris(return_X_y=True)
    result = triton_infer(through, "iris", [("input-0", rows, "FP64", True)])
    predicted = result.as_numpy(result.get_response()["outputs"][0]["name"])
    assert predicted.shape == (150,)
    assert (predicted == labels).mean() > 0.9


def test_transformer_serves_health_metadata_and_metrics(through):
    assert through.get("/v2/health/ready").status_code == 200
    assert through.get("/v1/models").json() == {"models": ["iris"]}
    assert through.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    through.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert 'model_name="iris"' in through.get("/metrics").text


def test_predictors_400_stays_400(through):
    response = through.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]})
    assert response.status_code == 400
    assert "error" in response.json()


def test_unknown_model_at_the_transformer_is_404(through):
    response = through.post("/v1/models/nope:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_at_the_predictor_stays_404(iris, protocol):
    server = start_transformer(
        f"127.0.0.1:{iris.port}", "--model_name=other", f"--predictor_protocol={protocol}"
    )
    try:
        response = server.post("/v1/models/other:predict", json={"instances": IRIS_ROWS})
        assert response.status_code == 404
        error = response.json()["error"]
        assert f"predictor 127.0.0.1:{iris.port}" in error and "'other' not found" in error
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predictor_down_is_502_and_readiness_follows_it(protocol):
    host = f"127.0.0.1:{free_port()}"
    server = start_transformer(
        host,
        "--model_name=iris",
        f"--predictor_protocol={protocol}",
        "--enable_predictor_health_check",
    )
    try:
        response = server.post("/v2/models/iris/infer", json=V2_IRIS)
        assert response.status_code == 502
        assert f"predictor {host} is unreachable" in response.json()["error"]
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/models/iris/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
    finally:
        server.stop()


def test_readiness_follows_a_ready_predictor(iris):
    server = start_transformer(
        f"127.0.0.1:{iris.port}", "--model_name=iris", "--enable_predictor_health_check=true"
    )
    try:
        assert server.get("/v2/health/ready").status_code == 200
        assert server.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    finally:
        server.stop()


def test_slow_predictor_is_504(tmp_path):
    slow = start_server("sklearn", constant_model(tmp_path / "m", 7, delay=3.0), "--model_name=m")
    server = start_transformer(
        f"127.0.0.1:{slow.port}", "--model_name=m", "--predictor_request_timeout_seconds=0.5"
    )
    try:
        response = server.post("/v1/models/m:predict", json={"instances": IRIS_ROWS})
        assert response.status_code == 504
        assert "timed out after 0.5s" in response.json()["error"]
    finally:
        server.stop()
        slow.stop()


def test_custom_hooks_async_preprocess_and_headers(iris):
    server = start_component(
        "tests.transformer.iris_names",
        f"--predictor_host=127.0.0.1:{iris.port}",
        "--model_name=iris",
    )
    try:
        names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
        rows = [dict(zip(names, row, strict=True)) for row in IRIS_ROWS]
        response = server.post(
            "/v1/models/iris:predict", json={"instances": rows}, headers={"x-request-id": "abc"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "predictions": ["versicolor", "versicolor"],
            "request_id": "abc",
        }
        # A V2 request goes through the same hooks untouched.
        v2 = server.post("/v2/models/iris/infer", json=V2_IRIS).json()
        assert np.array(v2["outputs"][0]["data"]).tolist() == [1, 1]
    finally:
        server.stop()
