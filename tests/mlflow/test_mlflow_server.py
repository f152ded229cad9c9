"""MLflow runtime end to end: models saved with mlflow in the test, served by a real process.

One server hosts every model (multi-model layout, one subdirectory each) so MLflow is
imported once: a KServe wine-quality style ElasticNet (sklearn flavour, named columns), an
XGBoost regressor (tensor signature), a custom pyfunc with params and a string column, a
pyfunc over named tensors, row sums over one named column and over two unnamed columns, a
model with unmet pinned requirements, models reached through MLflow URIs in
`model-settings.json`, and an iris forest saved with MLflow 3's defaults (the skops format).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import mlflow.xgboost
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.servers import ServerProcess, start_server, triton_infer

pytestmark = pytest.mark.heavy

WINE_COLUMNS = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
]
# Saving with explicit requirements skips MLflow's slow requirement inference (a subprocess).
PIP = ["mlflow", "cloudpickle", "pandas"]


class Scaler(mlflow.pyfunc.PythonModel):
    """Scales `x` by the `factor` param and tags `label` with the `suffix` param."""

    def predict(self, context, model_input, params=None):
        params = params or {}
        return pd.DataFrame(
            {
                "scaled": model_input["x"] * params.get("factor", 1.0),
                "tag": model_input["label"] + params.get("suffix", ""),
            }
        )


class Adder(mlflow.pyfunc.PythonModel):
    """Named tensors in, one tensor out: a + b."""

    def predict(self, context, model_input, params=None):
        return model_input["a"] + model_input["b"]


class RowSum(mlflow.pyfunc.PythonModel):
    """Columns in, the sum of each row out (whatever the columns are called)."""

    def predict(self, context, model_input, params=None):
        return model_input.sum(axis=1).to_numpy()


class Days(mlflow.pyfunc.PythonModel):
    """A datetime column in, its day of the month out."""

    def predict(self, context, model_input, params=None):
        return model_input["when"].dt.day.to_numpy()


class Lengths(mlflow.pyfunc.PythonModel):
    """A string tensor in, the length of each string out."""

    def predict(self, context, model_input, params=None):
        return np.array([len(text) for text in model_input], dtype=np.int64)


def wine_data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.uniform(0.1, 10.0, size=(rows, len(WINE_COLUMNS))), columns=WINE_COLUMNS
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("mlflow-models")
    train = wine_data(60, seed=0)
    quality = train["alcohol"] * 0.3 - train["pH"] * 0.1 + 5.0
    wine = ElasticNet(alpha=0.05, l1_ratio=0.5, random_state=42).fit(train, quality)
    mlflow.sklearn.save_model(
        wine,
        root / "wine",
        signature=infer_signature(train, wine.predict(train)),
        serialization_format="cloudpickle",  # MLflow 3's default (skops) needs the skops package
        pip_requirements=[*PIP, "scikit-learn"],
    )

    # MLflow 3's default serialization is skops: what the mlflow image must load unchanged.
    # A tree model stores a type skops only loads when the saver trusted it (kept in MLmodel).
    iris_x, iris_y = load_iris(return_X_y=True)
    forest = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)
    ).fit(iris_x, iris_y)
    mlflow.sklearn.save_model(
        forest,
        root / "iris-skops",
        signature=infer_signature(iris_x, forest.predict(iris_x)),
        pip_requirements=[*PIP, "scikit-learn", "skops"],
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )

    features = train.to_numpy(np.float32)[:, :4]
    booster = xgb.XGBRegressor(n_estimators=8, max_depth=3, random_state=0).fit(
        features, quality.to_numpy()
    )
    mlflow.xgboost.save_model(
        booster,
        root / "xgb",
        signature=infer_signature(features, booster.predict(features)),
        pip_requirements=[*PIP, "xgboost"],
    )

    scaler_input = pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]})
    mlflow.pyfunc.save_model(
        root / "scaler",
        python_model=Scaler(),
        signature=infer_signature(
            scaler_input,
            Scaler().predict(None, scaler_input),
            params={"factor": 1.0, "suffix": ""},
        ),
        pip_requirements=PIP,
    )

    mlflow.pyfunc.save_model(
        root / "adder",
        python_model=Adder(),
        signature=ModelSignature(
            inputs=Schema(
                [
                    TensorSpec(np.dtype(np.float32), (-1, 2), "a"),
                    TensorSpec(np.dtype(np.float32), (-1, 2), "b"),
                ]
            ),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]),
        ),
        pip_requirements=PIP,
    )

    one_column = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        root / "one-column",
        python_model=RowSum(),
        signature=infer_signature(one_column, RowSum().predict(None, one_column)),
        pip_requirements=PIP,
    )
    mlflow.pyfunc.save_model(
        root / "unnamed-columns",
        python_model=RowSum(),
        signature=ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")])),
        pip_requirements=PIP,
    )

    when = pd.DataFrame({"when": pd.to_datetime(["2024-03-05", "2024-03-06"])})
    mlflow.pyfunc.save_model(
        root / "days",
        python_model=Days(),
        signature=infer_signature(when, Days().predict(None, when)),
        pip_requirements=PIP,
    )

    mlflow.pyfunc.save_model(
        root / "lengths",
        python_model=Lengths(),
        signature=ModelSignature(inputs=Schema([TensorSpec(np.dtype(str), (-1,))])),
        pip_requirements=PIP,
    )

    # The same wine model, pinned to versions this environment does not have.
    shutil.copytree(root / "wine", root / "pinned")
    (root / "pinned" / "requirements.txt").write_text(
        "mlflow\n"  # satisfied by mlflow-skinny
        "scikit-learn==0.20.4\n"
        "modelport-no-such-package==1.0\n"
        "numpy>=1.0\n"
    )

    # Models found through MLflow URIs (MLServer's `parameters.uri`): a `file://` URI and a
    # path relative to the model's directory.
    (root / "by-file-uri").mkdir()
    (root / "by-file-uri" / "model-settings.json").write_text(
        json.dumps({"parameters": {"uri": (root / "wine").as_uri()}})
    )
    (root / "by-relative-uri" / "artifacts").mkdir(parents=True)
    shutil.copytree(root / "xgb", root / "by-relative-uri" / "artifacts" / "model")
    (root / "by-relative-uri" / "model-settings.json").write_text(
        json.dumps({"parameters": {"uri": "artifacts/model"}})
    )
    return {"root": root, "wine": wine, "booster": booster, "forest": forest}


@pytest.fixture(scope="module")
def server(models: dict[str, object]):
    process = start_server("mlflow", models["root"], timeout=120)
    yield process
    process.stop()


def wine_rows(rows: int = 3, seed: int = 7) -> pd.DataFrame:
    return wine_data(rows, seed).round(3)


def expect_ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def expect_error(response, *words: str) -> str:
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    return message


# --- metadata ---------------------------------------------------------------------------------


def test_metadata_from_signature(server: ServerProcess) -> None:
    wine = expect_ok(server.get("/v2/models/wine"))
    assert wine["platform"] == "mlflow"
    assert [spec["name"] for spec in wine["inputs"]] == WINE_COLUMNS
    assert {spec["datatype"] for spec in wine["inputs"]} == {"FP64"}
    assert wine["outputs"] == [{"name": "output-0", "datatype": "FP64", "shape": [-1]}]

    xgb_meta = expect_ok(server.get("/v2/models/xgb"))
    assert xgb_meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]

    scaler = expect_ok(server.get("/v2/models/scaler"))
    assert [(s["name"], s["datatype"]) for s in scaler["inputs"]] == [
        ("x", "FP64"),
        ("label", "BYTES"),
    ]
    assert [s["name"] for s in scaler["outputs"]] == ["scaled", "tag"]

    adder = expect_ok(server.get("/v2/models/adder"))
    assert [(s["name"], s["shape"]) for s in adder["inputs"]] == [("a", [-1, 2]), ("b", [-1, 2])]


# --- V1: MLflow's scoring formats -----------------------------------------------------------


def test_v1_dataframe_split_matches_the_model(server: ServerProcess, models) -> None:
    rows = wine_rows()
    expected = models["wine"].predict(rows)
    body = {"dataframe_split": json.loads(rows.to_json(orient="split"))}
    assert "index" in body["dataframe_split"]
    got = expect_ok(server.post("/v1/models/wine:predict", json=body))["predictions"]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_an_unloaded_predictor_still_answers_requests_already_holding_it(models) -> None:
    """The repository promises that requests in flight keep the predictor they started on:
    an unload (or eviction) while one waits for the pool must not break it (unload used
    to drop the model, and such a request failed with a 500)."""
    from modelport.base.model import ModelSettings
    from modelport.runtimes.mlflow.model import MLflowPredictor

    predictor = MLflowPredictor(ModelSettings("wine", Path(models["root"]) / "wine"))
    predictor.load()
    rows = wine_rows()
    body = {"dataframe_split": json.loads(rows.to_json(orient="split"))}
    request = predictor.decode_v1(body)
    predictor.unload()
    answer = predictor.encode_v1(predictor.infer(request))
    np.testing.assert_allclose(answer["predictions"], models["wine"].predict(rows), rtol=1e-9)


IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def test_skops_format_sklearn_model_served(server: ServerProcess, models) -> None:
    """MLflow 3 saves mlflow.sklearn models as skops by default; V1 and V2 serve them."""
    mlmodel = (models["root"] / "iris-skops" / "MLmodel").read_text()
    assert "serialization_format: skops" in mlmodel
    expected = models["forest"].predict(np.array(IRIS_ROWS)).tolist()
    assert expected == [1, 1]
    v1 = expect_ok(server.post("/v1/models/iris-skops:predict", json={"instances": IRIS_ROWS}))
    assert v1["predictions"] == expected
    v2 = expect_ok(
        server.post(
            "/v2/models/iris-skops/infer",
            json={
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [2, 4],
                        "datatype": "FP64",
                        "data": [v for row in IRIS_ROWS for v in row],
                    }
                ]
            },
        )
    )
    assert v2["outputs"][0]["data"] == expected


def test_v1_other_mlflow_formats_agree(server: ServerProcess, models) -> None:
    rows = wine_rows()
    expected = models["wine"].predict(rows)
    records = rows.to_dict(orient="records")
    bodies = [
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": rows.to_dict(orient="list")},
        # Rows of numbers map to the signature's columns by position.
        {"instances": rows.to_numpy().tolist()},
        # Columns in another order are aligned by name.
        {
            "dataframe_split": {
                "columns": WINE_COLUMNS[::-1],
                "data": rows[WINE_COLUMNS[::-1]].to_numpy().tolist(),
            }
        },
    ]
    for body in bodies:
        got = expect_ok(server.post("/v1/models/wine:predict", json=body))["predictions"]
        np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=str(list(body)))


def test_v1_integer_json_for_double_columns(server: ServerProcess, models) -> None:
    """JSON cannot say 7.0: whole numbers must reach a double column (MLflow alone refuses)."""
    rows = pd.DataFrame([[7] * len(WINE_COLUMNS)], columns=WINE_COLUMNS)
    got = expect_ok(
        server.post("/v1/models/wine:predict", json={"dataframe_records": rows.to_dict("records")})
    )
    np.testing.assert_allclose(got["predictions"], models["wine"].predict(rows.astype(float)))


def test_v1_params_and_dataframe_output(server: ServerProcess) -> None:
    body = {
        "dataframe_split": {"columns": ["x", "label"], "data": [[1.5, "a"], [2, "b"]]},
        "params": {"factor": 2.0, "suffix": "!"},
    }
    got = expect_ok(server.post("/v1/models/scaler:predict", json=body))
    assert got == {"predictions": [{"scaled": 3.0, "tag": "a!"}, {"scaled": 4.0, "tag": "b!"}]}
    # Without params the signature's defaults apply.
    del body["params"]
    got = expect_ok(server.post("/v1/models/scaler:predict", json=body))
    assert got["predictions"][0] == {"scaled": 1.5, "tag": "a"}


def test_v1_named_tensors(server: ServerProcess) -> None:
    columnar = {"inputs": {"a": [[1, 2], [3, 4]], "b": [[10, 20], [30, 40]]}}
    assert expect_ok(server.post("/v1/models/adder:predict", json=columnar)) == {
        "predictions": [[11.0, 22.0], [33.0, 44.0]]
    }
    rows = {"instances": [{"a": [1, 2], "b": [10, 20]}, {"a": [3, 4], "b": [30, 40]}]}
    assert expect_ok(server.post("/v1/models/adder:predict", json=rows))["predictions"] == [
        [11.0, 22.0],
        [33.0, 44.0],
    ]


def test_v1_tensor_model(server: ServerProcess, models) -> None:
    features = wine_rows().to_numpy(np.float32)[:, :4]
    got = expect_ok(server.post("/v1/models/xgb:predict", json={"inputs": features.tolist()}))
    np.testing.assert_allclose(got["predictions"], models["booster"].predict(features), rtol=1e-6)


# --- V2 -------------------------------------------------------------------------------------


def test_v2_named_columns(server: ServerProcess, models) -> None:
    rows = wine_rows()
    body = {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [len(rows)], "data": rows[name].tolist()}
            for name in reversed(WINE_COLUMNS)
        ]
    }
    got = expect_ok(server.post("/v2/models/wine/infer", json=body))
    assert got["outputs"][0]["name"] == "output-0"
    np.testing.assert_allclose(got["outputs"][0]["data"], models["wine"].predict(rows), rtol=1e-9)


def test_datetime_column_takes_the_text_its_metadata_asks_for(server: ServerProcess) -> None:
    """Metadata gives a datetime column as BYTES; MLflow's enforcement refused every text."""
    inputs = expect_ok(server.get("/v2/models/days"))["inputs"]
    assert inputs == [{"name": "when", "datatype": "BYTES", "shape": [-1]}]
    dates = ["2024-03-05 08:00", "2024-03-17 10:30"]
    body = {"inputs": [{"name": "when", "datatype": "BYTES", "shape": [2], "data": dates}]}
    assert expect_ok(server.post("/v2/models/days/infer", json=body))["outputs"][0]["data"] == [
        5,
        17,
    ]
    records = {"dataframe_records": [{"when": day} for day in dates]}
    got = expect_ok(server.post("/v1/models/days:predict", json=records))
    assert got == {"predictions": [5, 17]}
    bad = {"dataframe_records": [{"when": "soon"}]}
    expect_error(server.post("/v1/models/days:predict", json=bad), "'when'", "soon")


def test_string_tensor_takes_the_bytes_its_metadata_asks_for(server: ServerProcess) -> None:
    """A string tensor spec is BYTES in metadata; MLflow refused the object array it became."""
    inputs = expect_ok(server.get("/v2/models/lengths"))["inputs"]
    assert inputs == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    body = {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [2], "data": ["ab", "c"]}]}
    assert expect_ok(server.post("/v2/models/lengths/infer", json=body))["outputs"][0]["data"] == [
        2,
        1,
    ]
    got = expect_ok(server.post("/v1/models/lengths:predict", json={"instances": ["abc", ""]}))
    assert got == {"predictions": [3, 0]}
    numbers = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1], "data": [1]}]}
    expect_error(server.post("/v2/models/lengths/infer", json=numbers), "dtype")


def test_v2_params_from_request_parameters(server: ServerProcess) -> None:
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["p", "q"]},
    ]
    body = {"inputs": inputs, "parameters": {"factor": 10.0, "content_type": "pd"}}
    got = expect_ok(server.post("/v2/models/scaler/infer", json=body))
    outputs = {out["name"]: out for out in got["outputs"]}
    assert outputs["scaled"]["data"] == [10.0, 20.0]
    assert outputs["tag"] == {"name": "tag", "datatype": "BYTES", "shape": [2], "data": ["p", "q"]}
    # `params` as an object works too, and requested outputs pick columns.
    body = {
        "inputs": inputs,
        "parameters": {"params": {"suffix": "?"}},
        "outputs": [{"name": "tag"}],
    }
    got = expect_ok(server.post("/v2/models/scaler/infer", json=body))
    assert [out["name"] for out in got["outputs"]] == ["tag"]
    assert got["outputs"][0]["data"] == ["p?", "q?"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_round_trip(server: ServerProcess, models, protocol: str) -> None:
    rows = wine_rows(4)
    columns = [(name, rows[name].to_numpy(), "FP64", True) for name in WINE_COLUMNS]
    result = triton_infer(server, "wine", columns, {"output-0": True}, protocol)
    np.testing.assert_allclose(result.as_numpy("output-0"), models["wine"].predict(rows))

    features = rows.to_numpy(np.float32)[:, :4]
    result = triton_infer(server, "xgb", [("input-0", features, "FP32", True)], None, protocol)
    got = result.as_numpy("output-0")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, models["booster"].predict(features), rtol=1e-6)

    inputs = [
        ("x", np.array([1.0, 3.0]), "FP64", False),
        ("label", np.array([b"u", b"v"], dtype=object), "BYTES", True),
    ]
    result = triton_infer(
        server, "scaler", inputs, {"tag": True}, protocol, parameters={"suffix": "-ok"}
    )
    assert result.as_numpy("tag").tolist() == [b"u-ok", b"v-ok"]


# --- signature violations: 400 naming the problem, then a good request works -----------------


def test_missing_column_is_400(server: ServerProcess) -> None:
    records = wine_rows(2).drop(columns=["alcohol"]).to_dict("records")
    expect_error(
        server.post("/v1/models/wine:predict", json={"dataframe_records": records}), "alcohol"
    )
    body = {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [1], "data": [1.0]}
            for name in WINE_COLUMNS
            if name != "pH"
        ]
    }
    expect_error(server.post("/v2/models/wine/infer", json=body), "missing", "pH")
    expect_error(server.post("/v1/models/scaler:predict", json={"inputs": {"x": [1.0]}}), "label")
    expect_ok(
        server.post(
            "/v1/models/wine:predict", json={"dataframe_records": wine_rows(1).to_dict("records")}
        )
    )


def test_wrong_type_is_400(server: ServerProcess) -> None:
    body = {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [1], "data": [1.0]}
            for name in WINE_COLUMNS
            if name != "density"
        ]
        + [{"name": "density", "datatype": "BYTES", "shape": [1], "data": ["heavy"]}]
    }
    expect_error(server.post("/v2/models/wine/infer", json=body), "density")
    records = [{"x": "one", "label": "a"}]
    expect_error(server.post("/v1/models/scaler:predict", json={"dataframe_records": records}), "x")
    fine = [{"x": 1.0, "label": "a"}]
    assert expect_ok(server.post("/v1/models/scaler:predict", json={"dataframe_records": fine}))


def test_v1_1d_instances_are_rows_of_the_one_column(server: ServerProcess) -> None:
    """MLflow's scoring server maps a flat list to a single-column signature's column."""
    for body in ({"instances": [1.0, 2.0, 3.0]}, {"inputs": [1, 2, 3]}):
        got = expect_ok(server.post("/v1/models/one-column:predict", json=body))
        assert got == {"predictions": [1.0, 2.0, 3.0]}, body
    # Two columns still need rows of two values.
    expect_error(server.post("/v1/models/scaler:predict", json={"instances": [1.0]}), "x")


def test_integers_reach_unnamed_double_columns(server: ServerProcess) -> None:
    """Whole numbers widen to double by position as they do for named columns."""
    assert expect_ok(
        server.post("/v1/models/unnamed-columns:predict", json={"instances": [[1, 2], [3, 4]]})
    ) == {"predictions": [3.0, 7.0]}
    columns = [
        {"name": name, "datatype": "INT64", "shape": [2], "data": data}
        for name, data in (("p", [1, 3]), ("q", [2, 4]))
    ]
    matrix = [{"name": "input-0", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]
    for inputs in (columns, matrix):
        got = expect_ok(server.post("/v2/models/unnamed-columns/infer", json={"inputs": inputs}))
        assert got["outputs"][0]["data"] == [3.0, 7.0]
    text = [{**columns[0], "datatype": "BYTES", "data": ["a", "b"]}, columns[1]]
    expect_error(server.post("/v2/models/unnamed-columns/infer", json={"inputs": text}), "p")


def test_bool_for_a_float_spec_is_400(server: ServerProcess) -> None:
    """MLflow refuses bool for float columns and tensors; it was cast to 1.0/0.0 instead."""
    flags = {"datatype": "BOOL", "shape": [1, 2], "data": [True, False]}
    floats = {"datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}
    body = {"inputs": [{"name": "a", **flags}, {"name": "b", **floats}]}
    expect_error(server.post("/v2/models/adder/infer", json=body), "'a'", "FP32", "BOOL")
    column = [{"name": "x", "datatype": "BOOL", "shape": [2], "data": [True, False]}]
    expect_error(
        server.post("/v2/models/one-column/infer", json={"inputs": column}), "'x'", "FP64", "BOOL"
    )
    body = {"inputs": [{"name": "a", **floats}, {"name": "b", **floats}]}
    assert expect_ok(server.post("/v2/models/adder/infer", json=body))


def test_unknown_input_tensor_is_400(server: ServerProcess) -> None:
    """A tensor the signature does not name is refused as by the other tensor runtimes
    (a misspelt input must not run unnoticed); extra DataFrame columns are still dropped,
    as MLflow and the tabular runtimes drop them."""
    pair = {"datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}
    body = {"inputs": [{"name": name, **pair} for name in ("a", "b", "c")]}
    expect_error(server.post("/v2/models/adder/infer", json=body), "'c'", "a, b")
    named = {"inputs": {"a": [[1, 2]], "b": [[1, 2]], "c": [[1, 2]]}}
    expect_error(server.post("/v1/models/adder:predict", json=named), "'c'")
    records = [{**row, "quality": 5} for row in wine_rows(1).to_dict("records")]
    assert expect_ok(server.post("/v1/models/wine:predict", json={"dataframe_records": records}))


def test_tensor_violations_are_400(server: ServerProcess) -> None:
    expect_error(
        server.post("/v1/models/xgb:predict", json={"inputs": [[1, 2, 3]]}), "shape", "[-1, 4]"
    )
    expect_error(server.post("/v1/models/adder:predict", json={"inputs": {"a": [[1, 2]]}}), "b")
    expect_error(
        server.post("/v1/models/adder:predict", json={"inputs": {"a": [[1, 2]], "b": [[1, 2, 3]]}}),
        "'b'",
    )
    assert expect_ok(server.post("/v1/models/xgb:predict", json={"inputs": [[1, 2, 3, 4]]}))


def test_values_beyond_a_float32_tensor_are_400(server: ServerProcess) -> None:
    """1e300 narrowed to float32 is infinity: V2 used to blame the output (500), V1 null."""
    big = [{"name": name, "datatype": "FP64", "shape": [1, 2], "data": [1e300, 1]} for name in "ab"]
    expect_error(server.post("/v2/models/adder/infer", json={"inputs": big}), "'a'", "range")
    body = {"inputs": {"a": [[1e300, 1]], "b": [[1, 2]]}}
    expect_error(server.post("/v1/models/adder:predict", json=body), "'a'", "range")
    fine = {"inputs": {"a": [[1e30, 1]], "b": [[1, 2]]}}
    assert expect_ok(server.post("/v1/models/adder:predict", json=fine))


def test_bad_params_are_400(server: ServerProcess) -> None:
    split = {"columns": ["x", "label"], "data": [[1.0, "a"]]}
    expect_error(
        server.post(
            "/v1/models/scaler:predict",
            json={"dataframe_split": split, "params": {"factor": "big"}},
        ),
        "factor",
    )
    expect_error(
        server.post(
            "/v1/models/scaler:predict", json={"dataframe_split": split, "params": {"factr": 2}}
        ),
        "factr",
        "factor",
    )
    expect_error(
        server.post(
            "/v1/models/wine:predict", json={"instances": [[1.0] * 11], "params": {"k": 1}}
        ),
        "k",
        "none",
    )
    assert expect_ok(
        server.post(
            "/v1/models/scaler:predict", json={"dataframe_split": split, "params": {"factor": 3}}
        )
    )


def test_malformed_v1_bodies_are_400(server: ServerProcess) -> None:
    expect_error(server.post("/v1/models/wine:predict", json={"rows": [[1]]}), "dataframe_split")
    both = {"instances": [[1.0] * 11], "inputs": [[1.0] * 11]}
    expect_error(server.post("/v1/models/wine:predict", json=both), "exactly one")
    ragged = {"dataframe_split": {"columns": ["x", "label"], "data": [[1.0, "a"], [2.0]]}}
    expect_error(server.post("/v1/models/scaler:predict", json=ragged), "2 values")
    expect_error(
        server.post("/v1/models/wine:predict", json={"instances": [[1.0] * 10]}), "11 columns"
    )
    assert expect_ok(server.post("/v1/models/wine:predict", json={"instances": [[1.0] * 11]}))


# --- dependencies and model URIs --------------------------------------------------------------


def test_requirement_mismatch_logged_once(server: ServerProcess) -> None:
    warnings = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and "requirements differ" in line
    ]
    assert len(warnings) == 1, warnings
    warning = warnings[0]
    assert warning["level"] == "warning" and warning["model"] == "pinned"
    assert "scikit-learn==0.20.4 (installed " in warning["msg"]
    assert "modelport-no-such-package==1.0 (not installed)" in warning["msg"]
    assert len(warning["packages"]) == 2  # mlflow (skinny) and numpy are satisfied
    # It is a warning, not a failure: the model serves.
    assert expect_ok(server.post("/v1/models/pinned:predict", json={"instances": [[1.0] * 11]}))


def test_models_by_mlflow_uri(server: ServerProcess, models) -> None:
    rows = wine_rows(2)
    got = expect_ok(
        server.post(
            "/v1/models/by-file-uri:predict", json={"dataframe_records": rows.to_dict("records")}
        )
    )
    np.testing.assert_allclose(got["predictions"], models["wine"].predict(rows))
    features = rows.to_numpy(np.float32)[:, :4]
    got = expect_ok(
        server.post("/v1/models/by-relative-uri:predict", json={"inputs": features.tolist()})
    )
    np.testing.assert_allclose(got["predictions"], models["booster"].predict(features), rtol=1e-6)


def test_model_logged_to_a_local_file_store(serve, tmp_path: Path, monkeypatch) -> None:
    """`mlflow.log_model` into a local file store, served by `models:/<id>` and by path."""
    env = {"MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    example = pd.DataFrame({"x": [1.0], "label": ["a"]})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="scaler",
            python_model=Scaler(),
            signature=infer_signature(example, Scaler().predict(None, example)),
            pip_requirements=PIP,
        )
    logged = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (logged / "MLmodel").is_file() and str(logged).startswith(str(tmp_path))
    # One server: the run's model by `models:/<id>` and by its path inside the file store.
    served = tmp_path / "served"
    for name, uri in (("by-id", info.model_uri), ("by-path", str(logged))):
        (served / name).mkdir(parents=True)
        (served / name / "model-settings.json").write_text(json.dumps({"parameters": {"uri": uri}}))
    server = serve("mlflow", served, env=env, timeout=120)
    body = {"dataframe_split": {"columns": ["x", "label"], "data": [[2.0, "z"]]}}
    for name in ("by-id", "by-path"):
        got = expect_ok(server.post(f"/v1/models/{name}:predict", json=body))
        assert got == {"predictions": [{"scaled": 2.0, "tag": "z"}]}


@pytest.mark.parametrize("model", ["wine", "xgb", "scaler", "adder"])
def test_metadata_describes_what_infer_answers(server: ServerProcess, model: str) -> None:
    from tests.servers import assert_metadata_describes_infer

    rows = wine_rows(2)
    inputs = {
        "wine": [
            {"name": name, "datatype": "FP64", "shape": [2], "data": rows[name].tolist()}
            for name in WINE_COLUMNS
        ],
        "xgb": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4], "data": [1.0] * 8}],
        "scaler": [
            {"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["p", "q"]},
        ],
        "adder": [
            {"name": name, "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}
            for name in "ab"
        ],
    }[model]
    assert_metadata_describes_infer(server, model, inputs)
