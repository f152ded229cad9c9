"""Acceleration of the tabular runtimes: ONNX Runtime answers as the native model does.

Real servers with models trained here; each server gets its own TMPDIR, so its conversion
cache starts empty. The switch happens in the background: tests poll the metadata.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.boosters import outputs, save
from tests.servers import ServerProcess


def v2_body(rows: np.ndarray, *names: str, datatype: str = "FP32") -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": datatype,
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if names:
        body["outputs"] = [{"name": name} for name in names]
    return body


def wait_accelerate(server: ServerProcess, model: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the model metadata until acceleration has a verdict; its `parameters`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parameters = server.get(f"/v2/models/{model}").json().get("parameters", {})
        if parameters.get("accelerate") not in (None, "pending", "converting"):
            return parameters
        time.sleep(0.2)
    raise TimeoutError(f"no acceleration verdict after {timeout}s:\n{server.log()}")


def engine_metric(server: ServerProcess, model: str) -> dict[str, float]:
    values = {}
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("modelport_model_engine{") and f'model="{model}"' in line:
            engine = line.split('engine="')[1].split('"')[0]
            values[engine] = float(line.rsplit(" ", 1)[1])
    return values


def log_lines(server: ServerProcess, message: str) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{") and json.loads(line).get("logger") == "modelport.accelerate":
            record = json.loads(line)
            if record["msg"] == message:
                found.append(record)
    return found


@pytest.fixture
def tmp_env(tmp_path: Path) -> dict[str, str]:
    """A fresh TMPDIR per server: an empty conversion cache."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return {"TMPDIR": str(directory)}


def forest(directory: Path) -> tuple[Any, np.ndarray]:
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    return model, x.astype(np.float32)


def test_sklearn_forest_answers_as_native(serve, tmp_path, tmp_env):
    model, x = forest(tmp_path / "rf")
    server = serve("sklearn", tmp_path / "rf", "--model_name=rf", env=tmp_env)
    parameters = wait_accelerate(server, "rf")
    assert parameters["engine"] == "onnxruntime", parameters
    assert engine_metric(server, "rf")["onnxruntime"] == 1.0
    [verdict] = log_lines(server, "accelerated")
    assert verdict["verdict"] == "converted and verified"
    for rows in (x[:1], x[:300]):
        answer = outputs(server.post("/v2/models/rf/infer", json=v2_body(rows)))
        np.testing.assert_array_equal(answer["output-0"], model.predict(rows))
        proba = outputs(server.post("/v2/models/rf/infer", json=v2_body(rows, "predict_proba")))[
            "predict_proba"
        ]
        np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=1e-5, atol=1e-5)
    metadata = server.post("/v2/models/rf/infer", json=v2_body(x[:2], "predict")).json()
    assert metadata["outputs"][0]["datatype"] == "INT64"


def test_sklearn_logistic_answers_as_native_v1(serve, tmp_path, tmp_env):
    from tests.models import IRIS_ROWS, iris_logistic

    iris_logistic(tmp_path / "iris")
    server = serve("sklearn", tmp_path / "iris", "--model_name=iris", env=tmp_env)
    parameters = wait_accelerate(server, "iris")
    assert parameters["engine"] == "onnxruntime", parameters
    import joblib

    model = joblib.load(tmp_path / "iris" / "model.joblib")
    rows = np.random.default_rng(1).uniform(0, 8, (200, 4))
    response = server.post("/v1/models/iris:predict", json={"instances": rows.tolist()})
    assert response.json()["predictions"] == model.predict(rows).tolist()
    assert server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS}).json() == {
        "predictions": [1, 1]
    }
    proba = outputs(
        server.post("/v2/models/iris/infer", json=v2_body(rows, "predict_proba", datatype="FP64"))
    )["predict_proba"]
    np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=1e-9, atol=1e-9)


def booster_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 1).astype(int)
    return x, y


def test_xgboost_answers_as_native(serve, tmp_path, tmp_env):
    import xgboost as xgb

    x, y = booster_data()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "seed": 0},
        xgb.DMatrix(x, label=(y > 0).astype(int)),
        num_boost_round=30,
    )
    save(booster, tmp_path / "xgb", "model.json")
    server = serve("xgboost", tmp_path / "xgb", "--model_name=xgb", env=tmp_env)
    parameters = wait_accelerate(server, "xgb")
    assert parameters["engine"] == "onnxruntime", parameters
    rows = x[:50]
    answer = outputs(
        server.post("/v2/models/xgb/infer", json=v2_body(rows, "raw", "predict", "predict_proba"))
    )
    native = booster.predict(xgb.DMatrix(rows))
    np.testing.assert_allclose(answer["raw"], native, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(answer["predict"], (native > 0.5).astype(int))
    np.testing.assert_allclose(answer["predict_proba"][:, 1], native, rtol=1e-5, atol=1e-5)
    response = server.post("/v2/models/xgb/infer", json=v2_body(rows[:1])).json()
    assert response["outputs"][0]["datatype"] == "FP32"  # as XGBoost answers


def lightgbm_booster(directory: Path) -> tuple[Any, np.ndarray]:
    import lightgbm as lgb

    x, y = booster_data()
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "seed": 0},
        lgb.Dataset(x, label=y),
        num_boost_round=20,
    )
    save(booster, directory, "model.txt")
    return booster, x


def test_lightgbm_answers_as_native(serve, tmp_path, tmp_env):
    booster, x = lightgbm_booster(tmp_path / "lgb")
    server = serve("lightgbm", tmp_path / "lgb", "--model_name=lgb", env=tmp_env)
    parameters = wait_accelerate(server, "lgb")
    assert parameters["engine"] == "onnxruntime", parameters
    rows = x[:50]
    answer = outputs(
        server.post("/v2/models/lgb/infer", json=v2_body(rows, "raw", "predict", "output-0"))
    )
    native = booster.predict(rows)
    np.testing.assert_allclose(answer["raw"], native, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(answer["predict"], native.argmax(axis=1))
    response = server.post("/v2/models/lgb/infer", json=v2_body(rows[:1])).json()
    assert response["outputs"][0]["datatype"] == "FP64"  # as LightGBM answers


def test_lightgbm_zero_tolerance_falls_back(serve, tmp_path, tmp_env):
    """float32 scores never equal LightGBM's float64 ones exactly: a mismatch, so native."""
    lightgbm_booster(tmp_path / "lgb")
    flags = ("--model_name=lgb", "--accelerate_tolerance=0")
    server = serve("lightgbm", tmp_path / "lgb", *flags, env=tmp_env)
    parameters = wait_accelerate(server, "lgb")
    assert parameters["engine"] == "native"
    assert "differs from native" in parameters["accelerate"]
    [line] = log_lines(server, "serving natively")
    assert "differs from native" in line["reason"]
    assert engine_metric(server, "lgb") == {"onnxruntime": 0.0, "native": 1.0}


def test_unconvertible_pipeline_serves_natively(serve, tmp_path, tmp_env):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = booster_data()
    pipeline = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression())
    pipeline.fit(np.abs(x), y)
    (tmp_path / "pipe").mkdir()
    joblib.dump(pipeline, tmp_path / "pipe" / "model.joblib")
    server = serve("sklearn", tmp_path / "pipe", "--model_name=pipe", env=tmp_env)
    parameters = wait_accelerate(server, "pipe")
    assert parameters["engine"] == "native"
    assert parameters["accelerate"].startswith("native: cannot convert")
    [line] = log_lines(server, "serving natively")
    assert "cannot convert" in line["reason"]
    rows = np.abs(x[:5])
    answer = outputs(server.post("/v2/models/pipe/infer", json=v2_body(rows)))
    np.testing.assert_array_equal(answer["output-0"], pipeline.predict(rows))


def test_accelerate_off(serve, tmp_path, tmp_env):
    forest(tmp_path / "rf")
    server = serve("sklearn", tmp_path / "rf", "--model_name=rf", "--accelerate=off", env=tmp_env)
    parameters = server.get("/v2/models/rf").json()["parameters"]
    assert parameters == {"engine": "native", "accelerate": "off"}
    assert engine_metric(server, "rf") == {"onnxruntime": 0.0, "native": 1.0}
    assert not list(Path(tmp_env["TMPDIR"]).glob("modelport-accelerate/*"))


def test_model_settings_accelerate_off(serve, tmp_path, tmp_env):
    forest(tmp_path / "rf")
    (tmp_path / "rf" / "model-settings.json").write_text(json.dumps({"accelerate": "off"}))
    server = serve("sklearn", tmp_path / "rf", "--model_name=rf", env=tmp_env)
    assert server.get("/v2/models/rf").json()["parameters"]["accelerate"] == "off"


def test_two_workers_convert_once(serve, tmp_path, tmp_env):
    forest(tmp_path / "rf")
    server = serve("sklearn", tmp_path / "rf", "--model_name=rf", "--workers=2", env=tmp_env)
    deadline = time.monotonic() + 120
    while len(log_lines(server, "accelerated")) < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    verdicts = sorted(line["verdict"] for line in log_lines(server, "accelerated"))
    assert verdicts == ["converted and verified", "from cache"]
    assert engine_metric(server, "rf")["onnxruntime"] == 1.0


def test_converters_need_no_scikit_learn(tmp_path):
    """The XGBoost and LightGBM images hold no scikit-learn: conversion must not import it."""
    import lightgbm as lgb
    import xgboost as xgb

    x, y = booster_data()
    xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=y > 0), 5).save_model(
        tmp_path / "model.json"
    )
    lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, label=y > 0), 5).save_model(
        tmp_path / "model.txt"
    )
    code = f"""
import sys
sys.modules["sklearn"] = None  # as if not installed
from pathlib import Path
from modelport.base.model import ModelSettings
from modelport.runtimes.xgboost.model import XGBoostPredictor
from modelport.runtimes.lightgbm.model import LightGBMPredictor
for cls, name in ((XGBoostPredictor, "model.json"), (LightGBMPredictor, "model.txt")):
    predictor = cls(ModelSettings("m", Path({str(tmp_path)!r}), model_file=name))
    predictor.load()
    assert len(predictor.conversion().convert()) > 100
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


# --- in process: the shared machinery ----------------------------------------------------


def loaded_forest(tmp_path: Path) -> Any:
    from modelport.base.model import ModelSettings
    from modelport.runtimes.sklearn.model import SKLearnPredictor

    forest(tmp_path / "rf")
    predictor = SKLearnPredictor(ModelSettings("rf", tmp_path / "rf"))
    predictor.load()
    return predictor


def accelerator_for(predictor: Any, conversion: Any, **parameters: Any) -> Any:
    from modelport.base.accelerate import Accelerator

    return Accelerator(
        predictor.name,
        predictor.model_file(),
        conversion,
        predictor.probe_rows,
        lambda name, rows: np.asarray(predictor.all_outputs()[name](rows)),
        predictor.default_output(),
        parameters,
    )


def test_wrong_converter_is_caught(tmp_path, monkeypatch):
    """A graph answering other labels never serves: the probes show it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    predictor = loaded_forest(tmp_path)
    conversion = predictor.conversion()
    conversion.outputs["predict"] = lambda results: 1 - np.argmax(results[1], axis=1)
    accelerator = accelerator_for(predictor, conversion)
    accelerator.run()
    assert accelerator.engine is None
    assert accelerator.status.startswith("native: output 'predict' differs")
    rows = np.zeros((3, 8))
    assert accelerator.answer(rows, ["predict"]) is None


def test_switch_serves_only_eligible_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    predictor = loaded_forest(tmp_path)
    accelerator = accelerator_for(predictor, predictor.conversion())
    accelerator.run()
    assert accelerator.engine is not None, accelerator.status
    engine = accelerator.engine
    engine.sizes, engine.wins = [1, 8, 64], [True, True, False]
    rows = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    [labels] = accelerator.answer(rows, ["predict"])
    np.testing.assert_array_equal(labels, predictor.model.predict(rows))
    assert labels.dtype == predictor.model.predict(rows).dtype
    assert accelerator.answer(np.zeros((64, 8)), ["predict"]) is None  # native is faster
    assert accelerator.answer(np.zeros((30, 8)), ["predict"]) is None  # between 8 and 64
    assert accelerator.answer(np.full((2, 8), np.nan), ["predict"]) is None  # missing values
    assert accelerator.answer(rows, ["unknown"]) is None
    # Finite in float64 but past float32's range: the graph would answer it as infinity,
    # where scikit-learn refuses it (a 400); native decides.
    huge = rows.astype(np.float64)
    huge[0, 0] = 1e300
    assert accelerator.answer(huge, ["predict"]) is None
    assert accelerator.answer(rows.astype(np.float64), ["predict"]) is not None


def test_engine_timings_ignore_time_the_thread_spends_waiting(tmp_path, monkeypatch):
    """A verdict lasts the model's life, so a busy server must not skew it: single-threaded
    engines are timed in thread CPU time, and a call that waits (preempted, here asleep)
    is timed by the work it did, not by the wall clock."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    predictor = loaded_forest(tmp_path)
    accelerator = accelerator_for(predictor, predictor.conversion())
    native = accelerator.native

    def waiting_native(name: str, rows: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # 20 ms of wall time, no CPU time
        return native(name, rows)

    accelerator.native = waiting_native
    accelerator.run()
    verdict = accelerator.verdict
    assert verdict is not None and verdict.ok, accelerator.status
    assert all(us < 20_000 for us in verdict.native_us), verdict.native_us


def test_probes_lie_either_side_of_thresholds():
    from modelport.base.onnxgraph import either_side, first_max, threshold_probes

    thresholds = np.array([0.1, 0.5, 1 / 3, 2.0, -7.25])  # exact float32 and not
    below, above = either_side(thresholds)
    assert np.all(below.astype(np.float64) < thresholds)
    assert np.all(above.astype(np.float64) > thresholds)
    # the nearest float32 on each side: nothing representable between them and the threshold
    assert np.all(np.nextafter(below, np.float32(np.inf)).astype(np.float64) >= thresholds)
    assert np.all(np.nextafter(above, np.float32(-np.inf)).astype(np.float64) <= thresholds)
    rows = threshold_probes({0: [0.5], 2: [1.5, 3.0]}, 3, rows=16)
    assert rows.shape == (16 + 9, 3)  # random rows, then each of the 9 pool values once
    assert not np.isin(rows, [0.5, 1.5, 3.0]).any()
    assert set(np.unique(rows[:, 1])) == {0.0}
    assert first_max(np.array([[0.5, 0.5 + 1e-8], [0.2, 0.8]])).tolist() == [0, 1]


# --- requests the graph must leave to the native model -------------------------------------


def served_at_one_row(parameters: dict[str, Any]) -> None:
    """The graph serves single-row requests (they are where these tests send edge values)."""
    assert parameters["engine"] == "onnxruntime", parameters
    assert parameters["accelerate"].startswith("onnxruntime at batch sizes [1,"), parameters


def test_empty_batch_answers_as_native(serve, tmp_path, tmp_env):
    """scikit-learn refuses a request with no rows (a 400); the graph would answer `[]`."""
    model, x = forest(tmp_path / "rf")
    with pytest.raises(ValueError, match="0 sample"):
        model.predict(x[:0])
    server = serve("sklearn", tmp_path / "rf", "--model_name=rf", env=tmp_env)
    served_at_one_row(wait_accelerate(server, "rf"))
    response = server.post("/v2/models/rf/infer", json=v2_body(x[:0]))
    assert response.status_code == 400, response.text
    assert "0 sample" in response.json()["error"]


def categorical_data() -> tuple[np.ndarray, np.ndarray]:
    """A numeric feature and category codes 0-5 (odd codes drive the label)."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=600), rng.integers(0, 6, 600)]).astype(np.float32)
    y = ((x[:, 1] % 2 == 1) | (x[:, 0] > 1)).astype(int)
    return x, y


# Category codes as a client may send them: the model truncates 1.5 to 1 (and LightGBM
# -0.5 to 0) where the graph compares codes exactly.
CODES = [0.0, 1.0, 1.5, 2.0, 3.0, 3.7, 5.0, -0.5, -1.0, 7.0, 0.25, 4.5]


def coded_rows() -> np.ndarray:
    return np.array([[value, code] for value in (-0.5, 0.5, 1.5) for code in CODES], np.float32)


def graph_serving(predictor: Any, monkeypatch: Any) -> Any:
    """`predictor`'s accelerator with the graph verified and serving every batch size,
    however the timings came out (LightGBM's graph is not always the faster)."""
    from modelport.base import accelerate

    monkeypatch.setattr(accelerate, "MARGIN", float("inf"))
    accelerator = accelerator_for(predictor, predictor.conversion())
    accelerator.run()
    assert accelerator.serves_all(), accelerator.status
    return accelerator


def lightgbm_predictor(booster: Any, directory: Path) -> Any:
    from modelport.base.model import ModelSettings
    from modelport.runtimes.lightgbm.model import LightGBMPredictor

    save(booster, directory, "model.txt")
    predictor = LightGBMPredictor(ModelSettings("lgb", directory, model_file="model.txt"))
    predictor.load()
    return predictor


def test_lightgbm_category_codes_answer_as_native(tmp_path, monkeypatch):
    import lightgbm as lgb

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    x, y = categorical_data()
    params = {"objective": "binary", "verbose": -1, "seed": 0, "min_data_per_group": 5}
    booster = lgb.train(
        {**params, "cat_smooth": 1}, lgb.Dataset(x, label=y, categorical_feature=[1]), 20
    )
    accelerator = graph_serving(lightgbm_predictor(booster, tmp_path / "lgb"), monkeypatch)
    for row in coded_rows():
        answer = accelerator.answer(row[None], ["raw"])
        raw = booster.predict(row[None]) if answer is None else answer[0]
        np.testing.assert_allclose(
            raw, booster.predict(row[None]), rtol=1e-5, atol=1e-5, err_msg=row
        )
    assert accelerator.answer(coded_rows()[:1], ["raw"]) is not None  # whole codes: the graph


def test_xgboost_category_codes_answer_as_native(serve, tmp_path, tmp_env):
    import xgboost as xgb

    x, y = categorical_data()
    data = xgb.DMatrix(x, label=y, feature_types=["q", "c"], enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "seed": 0}, data, 20)
    save(booster, tmp_path / "xgb", "model.json")
    server = serve("xgboost", tmp_path / "xgb", "--model_name=xgb", env=tmp_env)
    served_at_one_row(wait_accelerate(server, "xgb"))
    for row in coded_rows():
        answer = outputs(server.post("/v2/models/xgb/infer", json=v2_body(row[None])))
        native = booster.predict(xgb.DMatrix(row[None], feature_types=["q", "c"]))
        np.testing.assert_allclose(answer["output-0"], native, rtol=1e-5, atol=1e-5, err_msg=row)


def test_lightgbm_values_it_reads_as_zero_answer_as_native(tmp_path, monkeypatch):
    """LightGBM reads every |x| <= 1e-35 (its kZeroThreshold, a float32) as 0 and splits
    zeros from negatives at -1e-35: a value of exactly -1e-35 goes right there, where the
    graph's plain `x <= -1e-35` sends it left."""
    import lightgbm as lgb

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    x[rng.random((600, 3)) < 0.5] = 0.0
    y = ((x[:, 0] > 0.1) | (x[:, 1] < -0.5)).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "seed": 0}, lgb.Dataset(x, y), 20)
    accelerator = graph_serving(lightgbm_predictor(booster, tmp_path / "lgb"), monkeypatch)
    tiny = np.float32(1e-35)
    for value in (-tiny, tiny, np.nextafter(-tiny, np.float32(-1)), -tiny / 2, tiny / 2):
        for feature in range(3):
            row = np.zeros((1, 3), np.float32)
            row[0, feature] = value
            answer = accelerator.answer(row, ["raw"])
            assert answer is not None
            np.testing.assert_allclose(
                answer[0], booster.predict(row), rtol=1e-5, atol=1e-5, err_msg=row
            )


def test_probes_take_each_category_code(tmp_path):
    """Verification tries every code the categorical splits name (and one past them), not
    only 0; whole numbers only, as the codes a model is sent."""
    import lightgbm as lgb
    import xgboost as xgb

    from modelport.base.model import ModelSettings
    from modelport.runtimes.lightgbm.model import LightGBMPredictor
    from modelport.runtimes.xgboost.model import XGBoostPredictor

    x, y = categorical_data()
    params = {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1}
    lgb.train(params, lgb.Dataset(x, label=y, categorical_feature=[1]), 5).save_model(
        tmp_path / "model.txt"
    )
    data = xgb.DMatrix(x, label=y, feature_types=["q", "c"], enable_categorical=True)
    xgb.train({"objective": "binary:logistic"}, data, 5).save_model(tmp_path / "model.json")
    for cls, name in ((LightGBMPredictor, "model.txt"), (XGBoostPredictor, "model.json")):
        predictor = cls(ModelSettings("m", tmp_path, model_file=name))
        predictor.load()
        codes = set(predictor.probe_rows()[:, 1].tolist())
        assert len(codes) >= 4 and all(code.is_integer() for code in codes), (name, codes)


def test_lightgbm_labels_too_close_to_call_answer_as_native(tmp_path, monkeypatch):
    """LightGBM picks labels from float64 scores: a margin of 1e-9 is class 1 there, and a
    0.5/0.5 tie in the graph's float32 probabilities, whose argmax says class 0. Twelve
    stumps make it one corner of the feature space, which the probe rows do not reach."""
    import lightgbm as lgb

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an empty conversion cache
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2000, 12)).astype(np.float32)
    y = (x.sum(axis=1) > 6).astype(int)
    params = {"objective": "binary", "num_leaves": 2, "boost_from_average": False}
    booster = lgb.train({**params, "verbose": -1, "seed": 0}, lgb.Dataset(x, y), 12)
    for tree in range(12):  # each stump: -1 below its threshold, 1e-9 / 12 above
        booster.set_leaf_output(tree, 0, -1.0)
        booster.set_leaf_output(tree, 1, 1e-9 / 12)
    accelerator = graph_serving(lightgbm_predictor(booster, tmp_path / "lgb"), monkeypatch)
    corner = np.ones((1, 12), np.float32)
    assert booster.predict(corner, raw_score=True)[0] == pytest.approx(1e-9)
    answer = accelerator.answer(corner, ["predict"])
    labels = booster.predict(corner).round().astype(int) if answer is None else answer[0]
    assert labels.tolist() == [1]
    rows = x[:50]
    [labels] = accelerator.answer(rows, ["predict"])  # clear calls: the graph answers
    np.testing.assert_array_equal(labels, (booster.predict(rows) > 0.5).astype(int))


def test_sklearn_boosting_labels_too_close_to_call_answer_as_native(serve, tmp_path, tmp_env):
    """Gradient boosting picks labels from a float64 margin: 1e-9 is class 1 there, and a
    0.5/0.5 tie in the graph's float32 probabilities (whose first class is 0). Twelve stumps
    make it one corner of the feature space, which the probe rows do not reach."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2000, 12)).astype(np.float32)
    total = x.sum(axis=1)
    y = (total > np.median(total)).astype(int)  # balanced: the initial margin is 0
    model = GradientBoostingClassifier(
        n_estimators=12, max_depth=1, learning_rate=1.0, random_state=0
    )
    model.fit(x, y)
    for stump in model.estimators_[:, 0]:  # each: -1 below its threshold, 1e-9 / 12 above
        stump.tree_.value[stump.tree_.children_left[0]] = -1.0
        stump.tree_.value[stump.tree_.children_right[0]] = 1e-9 / 12
    (tmp_path / "gb").mkdir()
    joblib.dump(model, tmp_path / "gb" / "model.joblib")
    corner = np.ones((1, 12), np.float32)
    assert model.decision_function(corner)[0] == pytest.approx(1e-9)
    server = serve("sklearn", tmp_path / "gb", "--model_name=gb", env=tmp_env)
    served_at_one_row(wait_accelerate(server, "gb"))
    for rows in (corner, x[:1], x[:8]):
        answer = outputs(server.post("/v2/models/gb/infer", json=v2_body(rows)))
        np.testing.assert_array_equal(answer["output-0"], model.predict(rows))


def test_labels_too_close_to_call_among_the_probes_still_get_timed(serve, tmp_path, tmp_env):
    """Boosting whose margin is -1e-9 wherever x0 lies above its threshold: class 0 to
    scikit-learn and to the graph's first of two tied scores, so verification passes; the
    timing runs then must take those rows to scikit-learn, not fail the whole verdict."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2000, 2)).astype(np.float32)
    y = (x[:, 0] + 0.1 * x[:, 1] > np.median(x[:, 0] + 0.1 * x[:, 1])).astype(int)
    model = GradientBoostingClassifier(
        n_estimators=1, max_depth=1, learning_rate=1.0, random_state=0
    ).fit(x, y)
    [stump] = model.estimators_[:, 0]
    stump.tree_.value[stump.tree_.children_left[0]] = -5.0
    stump.tree_.value[stump.tree_.children_right[0]] = -1e-9
    (tmp_path / "gb").mkdir()
    joblib.dump(model, tmp_path / "gb" / "model.joblib")
    server = serve("sklearn", tmp_path / "gb", "--model_name=gb", env=tmp_env)
    parameters = wait_accelerate(server, "gb")
    assert "Undecided" not in parameters["accelerate"], parameters
    assert "differs" not in parameters["accelerate"], parameters
    rows = rng.uniform(0, 1, size=(64, 2)).astype(np.float32)
    for batch in (rows[:1], rows[:8], rows):
        answer = outputs(server.post("/v2/models/gb/infer", json=v2_body(batch)))
        np.testing.assert_array_equal(answer["output-0"], model.predict(batch))
