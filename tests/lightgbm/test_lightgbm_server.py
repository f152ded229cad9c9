"""LightGBM server end to end: text formats and the sklearn wrapper, KServe's iris answers,
outputs, feature names, categorical features, explanations, the binary protocol, bad inputs,
several workers and import isolation."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.boosters import (
    assert_adds_up,
    assert_bad,
    check_metadata,
    colors_frame,
    outputs,
    save,
    v2_rows,
)
from tests.models import IRIS_ROWS
from tests.servers import ServerProcess, start_server, triton_infer

lgb = pytest.importorskip("lightgbm")
pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.heavy

# LightGBM stores iris' column names with underscores for spaces (as in KServe's samples).
# Contributions + bias must give the raw score to this tolerance.
TOLERANCE = 1e-9
NAMES = ["sepal_length_(cm)", "sepal_width_(cm)", "petal_length_(cm)", "petal_width_(cm)"]
PARAMS = {"seed": 0, "deterministic": True, "num_threads": 1, "verbose": -1}


def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True, as_frame=True)
    return x.set_axis(NAMES, axis=1), y


def train(params: dict[str, Any], x: Any, y: Any, rounds: int = 20) -> Any:
    return lgb.train({**PARAMS, **params}, lgb.Dataset(x, y), rounds)


def serve_module(directory: Path, *flags: str, **kwargs: Any):
    server = start_server("lightgbm", directory, *flags, **kwargs)
    yield server
    server.stop()


# --- models and servers (trained once per module) -----------------------------------------


@pytest.fixture(scope="module")
def multiclass() -> Any:
    x, y = iris()
    return train({"objective": "multiclass", "num_class": 3}, x, y)


@pytest.fixture(scope="module")
def iris_server(tmp_path_factory, multiclass):
    directory = save(multiclass, tmp_path_factory.mktemp("iris"), "model.txt")
    yield from serve_module(directory, "--model_name=iris")


@pytest.fixture(scope="module")
def colors_model() -> Any:
    frame, label = colors_frame()
    return train({"objective": "binary", "min_data_per_group": 5, "cat_smooth": 1}, frame, label)


@pytest.fixture(scope="module")
def colors_server(tmp_path_factory, colors_model):
    directory = save(colors_model, tmp_path_factory.mktemp("colors"), "model.bst")
    yield from serve_module(directory, "--model_name=colors", env={"PREDICT_PROBA": "true"})


@pytest.fixture(scope="module")
def regression_model() -> Any:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=300)
    return train({"objective": "regression"}, x, y)


@pytest.fixture(scope="module")
def regression_server(tmp_path_factory, regression_model):
    directory = save(regression_model, tmp_path_factory.mktemp("regression"), "model.txt")
    yield from serve_module(directory, "--model_name=reg", "--nthread=2")


# --- KServe's iris expectations and the formats -------------------------------------------


def test_iris_raw_probabilities_by_default(iris_server: ServerProcess, multiclass: Any) -> None:
    response = iris_server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"])
    assert predictions.argmax(axis=1).tolist() == [1, 1]
    np.testing.assert_allclose(predictions, multiclass.predict(np.array(IRIS_ROWS)), rtol=1e-12)

    result = outputs(iris_server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS)))
    np.testing.assert_allclose(result["output-0"], predictions, rtol=1e-12)


def test_iris_requested_outputs(iris_server: ServerProcess, multiclass: Any) -> None:
    body = v2_rows(IRIS_ROWS, "predict", "predict_proba", "margin")
    result = outputs(iris_server.post("/v2/models/iris/infer", json=body))
    assert result["predict"].tolist() == [1, 1]
    np.testing.assert_allclose(result["predict_proba"].sum(axis=1), 1.0, rtol=1e-9)
    margin = multiclass.predict(np.array(IRIS_ROWS), raw_score=True)
    np.testing.assert_allclose(result["margin"], margin, rtol=1e-12)


@pytest.mark.parametrize("filename", ["model.bst", "model.joblib"])
def test_bst_and_sklearn_wrapper(serve, tmp_path: Path, filename: str) -> None:
    """A wrapper trained on text labels answers `predict` with those labels."""
    x, y = iris()
    if filename.endswith(".joblib"):
        import joblib

        labels = np.array(["setosa", "versicolor", "virginica"])[y]
        wrapper = lgb.LGBMClassifier(n_estimators=20, **PARAMS).fit(x, labels)
        joblib.dump(wrapper, tmp_path / filename)
        booster, expected_labels = wrapper.booster_, ["versicolor", "versicolor"]
    else:
        booster = train({"objective": "multiclass", "num_class": 3}, x, y)
        save(booster, tmp_path, filename)
        expected_labels = [1, 1]
    server = serve("lightgbm", tmp_path, "--model_name=iris")
    result = outputs(
        server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "predict", "raw"))
    )
    assert result["predict"].tolist() == expected_labels
    np.testing.assert_allclose(result["raw"], booster.predict(np.array(IRIS_ROWS)), rtol=1e-12)


def test_json_dump_is_refused_with_advice(serve, tmp_path: Path, multiclass: Any) -> None:
    import json

    (tmp_path / "model.json").write_text(json.dumps(multiclass.dump_model()))
    server = serve("lightgbm", tmp_path, "--model_name=iris", wait=False)
    assert server.process.wait(timeout=60) != 0
    log = server.log()
    assert "model.json" in log and "JSON dump" in log and "save_model" in log, log


# --- feature names ------------------------------------------------------------------------


def test_v1_objects_align_shuffled_columns(iris_server: ServerProcess) -> None:
    shuffled = [dict(reversed(list(zip(NAMES, row, strict=True)))) for row in IRIS_ROWS]
    assert list(shuffled[0]) != NAMES
    by_name = iris_server.post("/v1/models/iris:predict", json={"instances": shuffled})
    positional = iris_server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert by_name.status_code == 200, by_name.text
    assert by_name.json() == positional.json()


def test_v2_pandas_inputs_align_shuffled_columns(iris_server: ServerProcess) -> None:
    columns = np.array(IRIS_ROWS).T
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": NAMES[i], "shape": [2], "datatype": "FP64", "data": columns[i].tolist()}
            for i in [3, 1, 0, 2]
        ],
        "outputs": [{"name": "predict"}],
    }
    result = outputs(iris_server.post("/v2/models/iris/infer", json=body))
    assert result["predict"].tolist() == [1, 1]


def test_categorical_feature_from_text(colors_server: ServerProcess, colors_model: Any) -> None:
    """Category names in V1 objects; PREDICT_PROBA=true makes probabilities the default."""
    rows = [
        {"size": 1.0, "color": "red", "a": 0.0},
        {"color": "blue", "a": 0.0, "size": 5.0},
        {"a": 2.0, "size": 5.0, "color": "green"},
    ]
    response = colors_server.post("/v1/models/colors:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    proba = np.array(response.json()["predictions"])
    frame = pd.DataFrame(rows)[["a", "color", "size"]]
    frame["color"] = pd.Categorical(frame["color"], categories=["blue", "green", "red"])
    np.testing.assert_allclose(proba[:, 1], colors_model.predict(frame), rtol=1e-12)
    assert proba.argmax(axis=1).tolist() == [1, 0, 1]
    labels = colors_server.post("/v2/models/colors/infer", json=_pd_body(rows, "predict"))
    assert outputs(labels)["predict"].tolist() == [1, 0, 1]


def _pd_body(rows: list[dict[str, Any]], *names: str) -> dict[str, Any]:
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": key,
                "shape": [len(values)],
                "datatype": "BYTES" if isinstance(values[0], str) else "FP64",
                "data": values,
            }
            for key, values in columns.items()
        ],
        "outputs": [{"name": name} for name in names],
    }


# --- explanations -------------------------------------------------------------------------


def test_explain_multiclass_adds_up_to_raw_score(
    iris_server: ServerProcess, multiclass: Any
) -> None:
    response = iris_server.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert np.array(doc["predictions"]).argmax(axis=1).tolist() == [1, 1]
    assert len(doc["explanations"]) == 2
    for explanation in doc["explanations"]:
        assert explanation["feature_names"] == NAMES
        assert np.array(explanation["contributions"]).shape == (3, 4)
        assert len(explanation["base_value"]) == 3
    assert_adds_up(
        doc["explanations"], multiclass.predict(np.array(IRIS_ROWS), raw_score=True), TOLERANCE
    )

    body = v2_rows(IRIS_ROWS, "contributions", "margin")
    result = outputs(iris_server.post("/v2/models/iris/infer", json=body))
    assert result["contributions"].shape == (2, 3, 5)
    np.testing.assert_allclose(result["contributions"].sum(axis=-1), result["margin"], rtol=1e-9)


def test_explain_binary_categorical(colors_server: ServerProcess) -> None:
    rows = [{"a": 0.0, "color": "red", "size": 1.0}, {"a": 0.0, "color": "blue", "size": 5.0}]
    response = colors_server.post("/v1/models/colors:explain", json={"instances": rows})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert np.array(doc["predictions"]).shape == (2, 2)
    first = doc["explanations"][0]
    assert first["feature_names"] == ["a", "color", "size"]
    assert isinstance(first["base_value"], float)
    assert np.argmax(first["contributions"]) == 1  # red drives the positive class
    margin = outputs(colors_server.post("/v2/models/colors/infer", json=_pd_body(rows, "margin")))
    assert_adds_up(doc["explanations"], margin["margin"], TOLERANCE)


def test_unnamed_model_takes_frames_by_position(
    regression_server: ServerProcess, regression_model: Any
) -> None:
    """A booster trained on an array has LightGBM's made-up names `Column_0`...: they are
    no names a client knows, so columns go by position (as for XGBoost and scikit-learn)
    and the metadata asks for a `[rows, 3]` tensor rather than three `Column_N` inputs."""
    rows = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]
    expected = regression_model.predict(np.array(rows))
    objects = [{"x": row[0], "y": row[1], "z": row[2]} for row in rows]
    response = regression_server.post("/v1/models/reg:predict", json={"instances": objects})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected)
    columns = np.array(rows).T.tolist()
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": name, "shape": [2], "datatype": "FP64", "data": column}
            for name, column in zip("xyz", columns, strict=True)
        ],
    }
    np.testing.assert_allclose(
        outputs(regression_server.post("/v2/models/reg/infer", json=body))["output-0"], expected
    )
    inputs = regression_server.get("/v2/models/reg").json()["inputs"]
    assert inputs == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]


def test_explain_regression(regression_server: ServerProcess, regression_model: Any) -> None:
    rows = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]
    response = regression_server.post("/v1/models/reg:explain", json={"instances": rows})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["explanations"][0]["feature_names"] == ["Column_0", "Column_1", "Column_2"]
    np.testing.assert_allclose(doc["predictions"], regression_model.predict(np.array(rows)))
    assert_adds_up(
        doc["explanations"], regression_model.predict(np.array(rows), raw_score=True), TOLERANCE
    )


# --- binary protocol ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_binary_round_trip(
    protocol: str, iris_server: ServerProcess, multiclass: Any
) -> None:
    rows = np.array(IRIS_ROWS, dtype=np.float32)
    wanted = {"raw": True, "contributions": True, "predict": False}
    inputs = [("input-0", rows, "FP32", True)]
    result = triton_infer(iris_server, "iris", inputs, wanted, protocol)
    raw = result.as_numpy("raw")
    assert raw.dtype == np.float64 and raw.shape == (2, 3)
    np.testing.assert_allclose(raw, multiclass.predict(rows), rtol=1e-12)
    assert result.as_numpy("contributions").shape == (2, 3, 5)
    assert result.as_numpy("predict").tolist() == [1, 1]


# --- bad inputs ---------------------------------------------------------------------------


def test_bad_inputs_are_400s(iris_server: ServerProcess, regression_server: ServerProcess) -> None:
    post = iris_server.post
    assert_bad(
        post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0, 3.0]]}),
        "expects 4 features",
        "got 3",
    )
    missing = [dict(zip(NAMES[1:], IRIS_ROWS[0][1:], strict=True))]
    assert_bad(post("/v1/models/iris:predict", json={"instances": missing}), "sepal_length_(cm)")
    assert_bad(post("/v1/models/iris:explain", json={"instances": missing}), "sepal_length_(cm)")
    assert_bad(post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "nope")), "nope", "raw")
    text = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": list("abcd")}]}
    assert_bad(post("/v2/models/iris/infer", json=text), "rejected the input")
    regression = v2_rows([[1.0, 2.0, 3.0]], "predict_proba")
    assert_bad(regression_server.post("/v2/models/reg/infer", json=regression), "predict_proba")

    good = post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert good.status_code == 200, good.text
    assert np.array(good.json()["predictions"]).argmax(axis=1).tolist() == [1, 1]


# --- several workers ----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_workers_serve_lightgbm(serve, tmp_path: Path, multiclass: Any) -> None:
    """`--workers 2`: spawned workers (never forked after OpenMP started) each load the
    model, and requests on fresh connections, several at once, all get the right answer."""
    server = serve("lightgbm", save(multiclass, tmp_path, "model.txt"), "--workers=2")
    expected = multiclass.predict(np.array(IRIS_ROWS))
    url = f"{server.url}/v1/models/model:predict"

    def predict(_: int) -> list[list[float]]:
        response = httpx.post(url, json={"instances": IRIS_ROWS}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(predict, range(16)))
    for answer in answers:
        np.testing.assert_allclose(answer, expected, rtol=1e-12)
    workers = [
        pid
        for pid in _children(server.process.pid)
        if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
        and "lib_lightgbm" in Path(f"/proc/{pid}/maps").read_text()
    ]
    assert len(workers) == 2, server.log()


# --- import isolation ---------------------------------------------------------------------


def test_runtime_imports_neither_sklearn_nor_xgboost(iris_server: ServerProcess) -> None:
    """Importing the runtime leaves scikit-learn (which LightGBM would import eagerly) and
    XGBoost out; the live server process has neither library mapped."""
    check = (
        "import sys, modelport.runtimes.lightgbm.model; "
        "loaded = [m for m in ('sklearn', 'xgboost') if m in sys.modules]; "
        "assert not loaded, loaded; assert 'lightgbm' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
    maps = Path(f"/proc/{iris_server.process.pid}/maps").read_text()
    assert "lib_lightgbm" in maps
    assert "/sklearn/" not in maps
    assert "libxgboost" not in maps


@pytest.mark.parametrize("model", ["iris", "colors", "reg"])
def test_metadata_describes_what_infer_answers(request: pytest.FixtureRequest, model: str) -> None:
    check_metadata(request, model)
