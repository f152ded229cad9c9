"""The sklearn runtime end to end: KServe V1, OIP V2 (JSON and binary), tritonclient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton

from tests.models import IRIS_ROWS, adult_pipeline, iris_logistic, iris_v2_body
from tests.servers import start_server, triton_infer

V2_IRIS = iris_v2_body()


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory):
    return iris_logistic(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="module")
def iris(iris_dir):
    server = start_server("sklearn", iris_dir, "--model_name=iris")
    yield server
    server.stop()


def test_v1_predict_matches_kserve_fixture(iris):
    response = iris.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200
    assert response.json() == {"predictions": [1, 1]}
    # KServe also accepts "inputs" in V1.
    response = iris.post("/v1/models/iris:predict", json={"inputs": IRIS_ROWS})
    assert response.json() == {"predictions": [1, 1]}


def test_v2_infer_json_echoes_id_and_names_output(iris):
    response = iris.post("/v2/models/iris/infer", json={**V2_IRIS, "id": "req-7"})
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["id"] == "req-7"
    assert body["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}
    ]


def test_v2_nested_data_and_no_content_type(iris):
    payload = b'{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64","data":%s}]}' % (
        str(IRIS_ROWS).encode()
    )
    # tritonclient sends JSON without a Content-Type header: it must still work.
    response = iris.client.post("/v2/models/iris/infer", content=payload, headers={})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [1, 1]


def test_health_metadata_and_listing(iris):
    assert iris.get("/").json() == {"status": "alive"}
    assert iris.get("/v2/health/live").json() == {"live": True}
    assert iris.get("/v2/health/ready").json() == {"ready": True}
    assert iris.get("/v1/models").json() == {"models": ["iris"]}
    assert iris.get("/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert iris.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    server = iris.get("/v2").json()
    assert server["name"] == "modelport"
    assert set(server["extensions"]) == {"binary_tensor_data", "model_repository"}
    meta = iris.get("/v2/models/iris").json()
    assert meta["name"] == "iris"
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert {output["name"] for output in meta["outputs"]} == {"predict", "predict_proba"}


def test_requested_outputs_predict_and_proba(iris):
    response = iris.post(
        "/v2/models/iris/infer",
        json={**V2_IRIS, "outputs": [{"name": "predict_proba"}, {"name": "predict"}]},
    )
    assert response.status_code == 200
    proba, labels = response.json()["outputs"]
    assert proba["name"] == "predict_proba" and proba["shape"] == [2, 3]
    assert proba["datatype"] == "FP64"
    rows = np.array(proba["data"]).reshape(2, 3)
    assert np.allclose(rows.sum(axis=1), 1.0)
    assert rows.argmax(axis=1).tolist() == [1, 1]
    assert labels == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [1, 1]}


def test_predict_proba_env_switch(serve, iris_dir):
    server = serve("sklearn", iris_dir, "--model_name=iris", env={"PREDICT_PROBA": "true"})
    predictions = server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS}).json()
    probabilities = np.array(predictions["predictions"])
    assert probabilities.shape == (2, 3)
    assert probabilities.argmax(axis=1).tolist() == [1, 1]


def test_x_request_id_is_echoed(iris):
    response = iris.get("/v2/health/ready", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert iris.get("/v2/health/live").headers["x-request-id"]


def test_grpc_infer_with_requested_outputs(iris):
    rows = np.array(IRIS_ROWS, dtype=np.float32)
    wanted = {"predict": True, "predict_proba": True}
    result = triton_infer(iris, "iris", [("input-0", rows, "FP32", True)], wanted, "grpc")
    assert result.as_numpy("predict").tolist() == [1, 1]
    assert result.as_numpy("predict_proba").shape == (2, 3)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_round_trip(iris, binary):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{iris.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        assert client.get_model_metadata("iris")["name"] == "iris"
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        data = np.array(IRIS_ROWS, dtype=np.float32)
        tensor = triton.InferInput("input-0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("predict", binary_data=binary),
            triton.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        result = client.infer("iris", [tensor], outputs=outputs, request_id="r1")
        assert result.as_numpy("predict").tolist() == [1, 1]
        assert result.as_numpy("predict_proba").shape == (2, 3)
        assert result.get_response()["id"] == "r1"
        for algorithm in ("gzip", "deflate"):  # tritonclient's compressed request bodies
            packed = client.infer(
                "iris", [tensor], outputs=outputs, request_compression_algorithm=algorithm
            )
            assert packed.as_numpy("predict").tolist() == [1, 1]
    finally:
        client.close()


def test_binary_request_with_json_response(iris):
    raw = np.array(IRIS_ROWS, dtype=np.float32).tobytes()
    header = (
        b'{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":%d}}]}' % len(raw)
    )
    response = iris.client.post(
        "/v2/models/iris/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [1, 1]


def test_binary_output_by_request_parameter(iris):
    response = iris.post(
        "/v2/models/iris/infer", json={**V2_IRIS, "parameters": {"binary_data_output": True}}
    )
    assert response.status_code == 200
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    output = header["outputs"][0]
    assert output["parameters"]["binary_data_size"] == 16
    assert np.frombuffer(response.content[length:], dtype="<i8").tolist() == [1, 1]


def test_explain_without_explainer_is_501(iris):
    response = iris.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS})
    assert response.status_code == 501
    assert "no explainer" in response.json()["error"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    server = start_server(
        "sklearn", adult_pipeline(tmp_path_factory.mktemp("adult")), "--model_name=adult"
    )
    yield server
    server.stop()


def test_pipeline_with_dataframe_over_v1_objects(pipeline):
    rows = [
        {"age": 30, "hours": 40.0, "job": "engineer"},
        {"age": 50, "hours": 20.0, "job": "farmer"},
    ]
    response = pipeline.post("/v1/models/adult:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [1, 0]}


def test_pipeline_with_v2_pd_columns(pipeline):
    payload = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "job", "shape": [2], "datatype": "BYTES", "data": ["engineer", "farmer"]},
            {"name": "hours", "shape": [2], "datatype": "FP64", "data": [40.0, 20.0]},
            {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 50]},
        ],
    }
    response = pipeline.post("/v2/models/adult/infer", json=payload)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1, 0]
    # A column the pipeline needs is missing: a 400 that names it.
    payload["inputs"] = payload["inputs"][:2]
    response = pipeline.post("/v2/models/adult/infer", json=payload)
    assert response.status_code == 400
    assert "age" in response.json()["error"]


def test_default_output_can_be_requested_by_its_name(iris):
    # KServe and tritonclient users ask for the output under the name the server gave it.
    response = iris.post(
        "/v2/models/iris/infer",
        json={**V2_IRIS, "outputs": [{"name": "output-0", "parameters": {"binary_data": False}}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}
    ]


@pytest.fixture(scope="module")
def estimators(tmp_path_factory):
    """One server over estimators whose outputs differ in datatype and rank."""
    import joblib
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression

    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    models = {
        "int-labels": LogisticRegression(max_iter=1000).fit(x, y),
        "text-labels": LogisticRegression(max_iter=1000).fit(x, names),
        "regressor": LinearRegression().fit(x, y.astype(float)),
        "two-targets": LinearRegression().fit(x, np.stack([y, 2 * y], axis=1)),
        "clusters": KMeans(n_clusters=3, n_init=2, random_state=0).fit(x),
        "forest": RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y),
    }
    root = tmp_path_factory.mktemp("estimators")
    for name, model in models.items():
        (root / name).mkdir()
        joblib.dump(model, root / name / "model.joblib")
    server = start_server("sklearn", root)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "model", ["int-labels", "text-labels", "regressor", "two-targets", "clusters", "forest"]
)
def test_metadata_describes_what_infer_answers(estimators, model):
    from tests.servers import assert_metadata_describes_infer

    inputs = [{**V2_IRIS["inputs"][0], "datatype": "FP64"}]
    answered = assert_metadata_describes_infer(estimators, model, inputs)
    if model == "int-labels":  # the case the issue saw: metadata said FP64 [-1, -1]
        assert answered["predict"]["datatype"] == "INT64"
        assert answered["predict"]["shape"] == [2]


def test_text_labels_of_any_numpy_string_dtype_over_v1_and_v2(serve, tmp_path):
    """Labels fitted from a numpy str array (`<U10`, the dtype `np.array(["a", ...])` gives)
    are predicted in that dtype: V1 answered them with a 500, V2 as BYTES."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    assert names.dtype.kind == "U"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, names), tmp_path / "model.joblib")
    server = serve("sklearn", tmp_path, "--model_name=iris", "--accelerate=off")
    response = server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": ["versicolor", "versicolor"]}
    response = server.post("/v2/models/iris/infer", json=V2_IRIS)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["datatype"], output["data"]) == ("BYTES", ["versicolor", "versicolor"])
