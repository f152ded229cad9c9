"""XGBoost server end to end: native formats, KServe's iris answers, outputs, feature names,
categorical features, explanations, the binary protocol, bad inputs and import isolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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

xgb = pytest.importorskip("xgboost")
pd = pytest.importorskip("pandas")
pytestmark = [
    pytest.mark.heavy,
    # XGBoost 3 writes `.bst` as UBJSON and says so; that is the format being tested.
    pytest.mark.filterwarnings("ignore:.*UBJSON format as default"),
]

# Contributions + bias must give the raw score to this tolerance.
TOLERANCE = 1e-4
NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
PARAMS = {"seed": 0, "max_depth": 3, "eta": 0.3}


def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True, as_frame=True)


def train(params: dict[str, Any], x: Any, y: Any, rounds: int = 15) -> Any:
    data = xgb.DMatrix(x, y, enable_categorical=True)
    return xgb.train({**PARAMS, **params}, data, rounds)


def serve_module(runtime: str, directory: Path, *flags: str, **kwargs: Any):
    server = start_server(runtime, directory, *flags, **kwargs)
    yield server
    server.stop()


# --- models and servers (trained once per module) -----------------------------------------


@pytest.fixture(scope="module")
def softprob(tmp_path_factory) -> Any:
    x, y = iris()
    return train({"objective": "multi:softprob", "num_class": 3}, x, y)


@pytest.fixture(scope="module")
def iris_server(tmp_path_factory, softprob):
    directory = save(softprob, tmp_path_factory.mktemp("softprob"), "model.json")
    yield from serve_module("xgboost", directory, "--model_name=iris")


@pytest.fixture(scope="module")
def colors_model() -> Any:
    frame, label = colors_frame()
    return train({"objective": "binary:logistic", "max_cat_to_onehot": 1}, frame, label)


@pytest.fixture(scope="module")
def colors_server(tmp_path_factory, colors_model):
    directory = save(colors_model, tmp_path_factory.mktemp("colors"), "model.ubj")
    yield from serve_module(
        "xgboost",
        directory,
        "--model_name=colors",
        "--nthread=2",
        env={"PREDICT_PROBA": "true"},
    )


@pytest.fixture(scope="module")
def regression_model() -> Any:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=200)
    return train({"objective": "reg:squarederror"}, x, y)


@pytest.fixture(scope="module")
def regression_server(tmp_path_factory, regression_model):
    directory = save(regression_model, tmp_path_factory.mktemp("regression"), "model.bst")
    yield from serve_module("xgboost", directory, "--model_name=reg")


# --- KServe's iris expectations and the native formats ------------------------------------


def test_iris_raw_probabilities_by_default(iris_server: ServerProcess, softprob: Any) -> None:
    response = iris_server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"])
    assert predictions.argmax(axis=1).tolist() == [1, 1]
    expected = softprob.predict(xgb.DMatrix(np.array(IRIS_ROWS), feature_names=NAMES))
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)

    result = outputs(iris_server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS)))
    assert list(result) == ["output-0"]
    np.testing.assert_allclose(result["output-0"], expected, rtol=1e-6)
    header = iris_server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS)).json()
    assert header["outputs"][0]["datatype"] == "FP32"


def test_iris_requested_outputs(iris_server: ServerProcess, softprob: Any) -> None:
    body = v2_rows(IRIS_ROWS, "predict", "predict_proba", "margin", "raw")
    result = outputs(iris_server.post("/v2/models/iris/infer", json=body))
    assert result["predict"].tolist() == [1, 1]
    np.testing.assert_allclose(result["predict_proba"], result["raw"], rtol=1e-6)
    margin = softprob.predict(
        xgb.DMatrix(np.array(IRIS_ROWS), feature_names=NAMES), output_margin=True
    )
    np.testing.assert_allclose(result["margin"], margin, rtol=1e-5)


@pytest.mark.parametrize("filename", ["model.ubj", "model.bst", "model.joblib"])
def test_native_formats_and_sklearn_wrapper(serve, tmp_path: Path, filename: str) -> None:
    x, y = iris()
    if filename.endswith(".joblib"):
        import joblib

        wrapper = xgb.XGBClassifier(n_estimators=15, max_depth=3, random_state=0).fit(x, y)
        joblib.dump(wrapper, tmp_path / filename)
        booster = wrapper.get_booster()
    else:
        booster = train({"objective": "multi:softprob", "num_class": 3}, x, y)
        save(booster, tmp_path, filename)
    server = serve("xgboost", tmp_path, "--model_name=iris")
    result = outputs(
        server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "predict", "raw"))
    )
    assert result["predict"].tolist() == [1, 1]
    expected = booster.predict(xgb.DMatrix(np.array(IRIS_ROWS), feature_names=NAMES))
    np.testing.assert_allclose(result["raw"], expected, rtol=1e-6)


def test_multi_softmax_labels_and_derived_probabilities(serve, tmp_path: Path) -> None:
    """KServe's xgboost fixture is multi:softmax: raw answers are the labels [1, 1].

    Its probabilities are the softmax of the margins, exactly what the same model trained
    with multi:softprob predicts (the two objectives differ only in the output transform).
    """
    x, y = iris()
    params = {"num_class": 3}
    softmax = train({"objective": "multi:softmax", **params}, x, y)
    softprob = train({"objective": "multi:softprob", **params}, x, y)
    server = serve("xgboost", save(softmax, tmp_path, "model.json"), "--model_name=iris")
    response = server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [1.0, 1.0]

    result = outputs(
        server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "predict", "predict_proba"))
    )
    assert result["predict"].tolist() == [1, 1]
    expected = softprob.predict(xgb.DMatrix(np.array(IRIS_ROWS), feature_names=NAMES))
    np.testing.assert_allclose(result["predict_proba"], expected, rtol=1e-5)


def test_old_binary_format_is_a_clear_load_error(tmp_path: Path) -> None:
    """XGBoost 1.x/2.0 saved `.bst` in a binary format XGBoost 3 cannot read; its own
    message ("Unknown construct ... binf") tells the user nothing they can act on."""
    old = Path(__file__).parents[1] / "kserve" / "models" / "xgboost-1.7.6.bst"
    (tmp_path / "model.bst").write_bytes(old.read_bytes())
    server = start_server("xgboost", tmp_path, "--accelerate=off", wait=False)
    assert server.process.wait(60) != 0
    log = server.log()
    assert "old binary format" in log, log
    assert 'save_model("model.json")' in log, log
    assert "Unknown construct" not in log and "Stack trace" not in log, log


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
    order = [2, 0, 3, 1]
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": NAMES[i], "shape": [2], "datatype": "FP64", "data": columns[i].tolist()}
            for i in order
        ],
        "outputs": [{"name": "predict"}],
    }
    result = outputs(iris_server.post("/v2/models/iris/infer", json=body))
    assert result["predict"].tolist() == [1, 1]


def test_categorical_feature_from_text(colors_server: ServerProcess, colors_model: Any) -> None:
    """V1 objects with category names (any key order); PREDICT_PROBA=true makes probabilities
    the default; the model re-codes the names to its own categories."""
    rows = [
        {"size": 1.0, "color": "red", "a": 0.0},
        {"color": "blue", "a": 0.0, "size": 5.0},
        {"a": 2.0, "size": 5.0, "color": "green"},
    ]
    response = colors_server.post("/v1/models/colors:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    proba = np.array(response.json()["predictions"])
    frame = pd.DataFrame(rows)[["a", "color", "size"]].astype({"color": "category"})
    expected = colors_model.predict(xgb.DMatrix(frame, enable_categorical=True))
    np.testing.assert_allclose(proba[:, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert proba.argmax(axis=1).tolist() == [1, 0, 1]

    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "color", "shape": [3], "datatype": "BYTES", "data": ["red", "blue", "green"]},
            {"name": "size", "shape": [3], "datatype": "FP64", "data": [1.0, 5.0, 5.0]},
            {"name": "a", "shape": [3], "datatype": "FP64", "data": [0.0, 0.0, 2.0]},
        ],
        "outputs": [{"name": "predict"}, {"name": "raw"}],
    }
    result = outputs(colors_server.post("/v2/models/colors/infer", json=body))
    assert result["predict"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(result["raw"], expected, rtol=1e-6)


def test_unnamed_model_takes_arrays_and_frames_by_position(
    regression_server: ServerProcess, regression_model: Any
) -> None:
    rows = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]
    response = regression_server.post("/v1/models/reg:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    expected = regression_model.predict(xgb.DMatrix(np.array(rows)))
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": rows}]}
    body["outputs"] = [{"name": "predict"}]
    result = outputs(regression_server.post("/v2/models/reg/infer", json=body))
    np.testing.assert_allclose(result["predict"], expected, rtol=1e-6)
    # Objects for a model without feature names: their columns, in the order given.
    objects = [{"x": row[0], "y": row[1], "z": row[2]} for row in rows]
    response = regression_server.post("/v1/models/reg:predict", json={"instances": objects})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)


# --- explanations -------------------------------------------------------------------------


def test_explain_multiclass_adds_up_to_margin(iris_server: ServerProcess) -> None:
    response = iris_server.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert np.array(doc["predictions"]).argmax(axis=1).tolist() == [1, 1]
    assert len(doc["explanations"]) == 2
    for explanation in doc["explanations"]:
        assert explanation["feature_names"] == NAMES
        assert np.array(explanation["contributions"]).shape == (3, 4)
        assert len(explanation["base_value"]) == 3
    margin = outputs(iris_server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "margin")))
    assert_adds_up(doc["explanations"], margin["margin"], TOLERANCE)

    result = outputs(
        iris_server.post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "contributions"))
    )
    assert result["contributions"].shape == (2, 3, 5)
    np.testing.assert_allclose(result["contributions"].sum(axis=-1), margin["margin"], rtol=1e-4)


def test_explain_binary_categorical(colors_server: ServerProcess) -> None:
    rows = [{"a": 0.0, "color": "red", "size": 1.0}, {"a": 0.0, "color": "blue", "size": 5.0}]
    response = colors_server.post("/v1/models/colors:explain", json={"instances": rows})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert np.array(doc["predictions"]).shape == (2, 2)  # PREDICT_PROBA=true
    assert doc["explanations"][0]["feature_names"] == ["a", "color", "size"]
    assert isinstance(doc["explanations"][0]["base_value"], float)
    margin = outputs(
        colors_server.post(
            "/v2/models/colors/infer",
            json={
                "parameters": {"content_type": "pd"},
                "inputs": [
                    {"name": "a", "shape": [2], "datatype": "FP64", "data": [0.0, 0.0]},
                    {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
                    {"name": "size", "shape": [2], "datatype": "FP64", "data": [1.0, 5.0]},
                ],
                "outputs": [{"name": "margin"}],
            },
        )
    )["margin"]
    assert_adds_up(doc["explanations"], margin, TOLERANCE)
    # Red drives the positive class: its contribution is the largest of the first row.
    first = np.array(doc["explanations"][0]["contributions"])
    assert first.argmax() == 1, first


def test_explain_regression_unnamed_features(
    regression_server: ServerProcess, regression_model: Any
) -> None:
    rows = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]
    response = regression_server.post("/v1/models/reg:explain", json={"instances": rows})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["explanations"][0]["feature_names"] == ["f0", "f1", "f2"]
    margin = regression_model.predict(xgb.DMatrix(np.array(rows)), output_margin=True)
    assert_adds_up(doc["explanations"], margin, TOLERANCE)


# --- binary protocol ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_binary_round_trip(
    protocol: str, iris_server: ServerProcess, softprob: Any
) -> None:
    rows = np.array(IRIS_ROWS, dtype=np.float32)
    wanted = {"raw": True, "contributions": True, "predict": False}
    inputs = [("input-0", rows, "FP32", True)]
    result = triton_infer(iris_server, "iris", inputs, wanted, protocol)
    raw = result.as_numpy("raw")
    assert raw.dtype == np.float32 and raw.shape == (2, 3)
    expected = softprob.predict(xgb.DMatrix(rows, feature_names=NAMES))
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
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
    missing = [dict(zip(NAMES[:3], IRIS_ROWS[0][:3], strict=True))]
    assert_bad(post("/v1/models/iris:predict", json={"instances": missing}), "petal width (cm)")
    assert_bad(post("/v1/models/iris:explain", json={"instances": missing}), "petal width (cm)")
    assert_bad(post("/v2/models/iris/infer", json=v2_rows(IRIS_ROWS, "nope")), "nope", "raw")
    text = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": list("abcd")}]}
    assert_bad(post("/v2/models/iris/infer", json=text), "rejected the input")
    regression = v2_rows([[1.0, 2.0, 3.0]], "predict_proba")
    assert_bad(regression_server.post("/v2/models/reg/infer", json=regression), "predict_proba")
    # XGBoost's own refusal, without its native source location and stack trace.
    huge = post("/v1/models/iris:predict", json={"instances": [[1e300, 2.0, 3.0, 4.0]]})
    assert_bad(huge, "Input data contains `inf` or a value too large")
    error = huge.json()["error"]
    assert "Stack trace" not in error and ".cc:" not in error, error

    good = post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert good.status_code == 200, good.text
    assert np.array(good.json()["predictions"]).argmax(axis=1).tolist() == [1, 1]


# --- import isolation ---------------------------------------------------------------------


def test_runtime_imports_neither_sklearn_nor_lightgbm(iris_server: ServerProcess) -> None:
    """Importing the runtime leaves scikit-learn (which XGBoost would import eagerly) and
    LightGBM out; the live server process has neither library mapped."""
    check = (
        "import sys, modelport.runtimes.xgboost.model; "
        "loaded = [m for m in ('sklearn', 'lightgbm') if m in sys.modules]; "
        "assert not loaded, loaded; assert 'xgboost' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
    maps = Path(f"/proc/{iris_server.process.pid}/maps").read_text()
    assert "libxgboost" in maps
    assert "/sklearn/" not in maps
    assert "lib_lightgbm" not in maps


def test_metadata_lists_outputs_and_features(iris_server: ServerProcess) -> None:
    response = iris_server.get("/v2/models/iris")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["platform"] == "xgboost"
    assert [item["name"] for item in doc["inputs"]] == NAMES
    names = [item["name"] for item in doc["outputs"]]
    assert set(names) == {"raw", "margin", "predict", "predict_proba", "contributions"}


@pytest.mark.parametrize("model", ["iris", "colors", "reg"])
def test_metadata_describes_what_infer_answers(request: pytest.FixtureRequest, model: str) -> None:
    check_metadata(request, model)
