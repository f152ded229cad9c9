"""MLflow runtime: what pyfuncs answer beyond ndarrays and DataFrames, and models it cannot load.

One server hosts pyfuncs returning a one-key dict, records, ragged lists, text with missing
values and scalars; V1 must answer as `mlflow models serve` does (JSON values, not their
Python repr), V2 as JSON text marked `content_type: json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.heavy

PIP = ["mlflow", "cloudpickle", "pandas"]


class Answer(mlflow.pyfunc.PythonModel):
    """Answers one fixed kind of prediction for a one-column input of two rows."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def predict(self, context, model_input, params=None):
        return {
            "one-key-dict": {"score": np.array([0.5, 1.5])},
            "records": [{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.1}],
            "ragged": [[1, 2], [3]],
            "missing-text": pd.DataFrame({"label": ["cat", None], "score": [0.9, 0.1]}),
            "none": None,
            "text-scalar": "cat",
            "bytes-matrix": np.array([[b"ab", b"c"], [b"d", b"e"]]),
        }[self.kind]


KINDS = [
    "one-key-dict",
    "records",
    "ragged",
    "missing-text",
    "none",
    "text-scalar",
    "bytes-matrix",
]
ROWS = {"instances": [1.0, 2.0]}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-outputs")


@pytest.fixture(scope="module")
def server(root: Path):
    example = pd.DataFrame({"x": [1.0, 2.0]})
    for kind in KINDS:
        mlflow.pyfunc.save_model(
            root / kind,
            python_model=Answer(kind),
            signature=infer_signature(example),
            pip_requirements=PIP,
        )
    process = start_server("mlflow", root, timeout=120)
    yield process
    process.stop()


def v1(server: ServerProcess, model: str) -> object:
    response = server.post(f"/v1/models/{model}:predict", json=ROWS)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def v2(server: ServerProcess, model: str) -> list[dict]:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}
    response = server.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return response.json()["outputs"]


def test_a_one_key_dict_keeps_its_key(server: ServerProcess) -> None:
    """MLflow answers every dict as {name: list}; one key used to lose its name in V1."""
    assert v1(server, "one-key-dict") == {"score": [0.5, 1.5]}
    assert [out["name"] for out in v2(server, "one-key-dict")] == ["score"]


def test_objects_are_json_not_their_python_repr(server: ServerProcess) -> None:
    """Records and ragged lists came back as "{'label': 'cat', ...}" strings."""
    assert v1(server, "records") == [
        {"label": "cat", "score": 0.9},
        {"label": "dog", "score": 0.1},
    ]
    assert v1(server, "ragged") == [[1, 2], [3]]
    (out,) = v2(server, "records")
    assert out["datatype"] == "BYTES" and out["parameters"] == {"content_type": "json"}
    assert [json.loads(item) for item in out["data"]] == v1(server, "records")


def test_missing_text_is_null_not_a_word(server: ServerProcess) -> None:
    """A text column's missing value was answered as the string "nan" (or "None")."""
    assert v1(server, "missing-text") == [
        {"label": "cat", "score": 0.9},
        {"label": None, "score": 0.1},
    ]
    label = next(out for out in v2(server, "missing-text") if out["name"] == "label")
    assert label["parameters"] == {"content_type": "json"}
    assert [json.loads(item) for item in label["data"]] == ["cat", None]


def test_scalar_answers_are_not_split_into_characters(server: ServerProcess) -> None:
    """None came back as ["N", "o", "n", "e"], a text scalar as its letters."""
    assert v1(server, "none") is None
    assert v1(server, "text-scalar") == "cat"
    (out,) = v2(server, "text-scalar")
    assert out["shape"] == [] and out["data"] == ["cat"]


def test_nested_bytes_are_text(server: ServerProcess) -> None:
    """Bytes below the first level of an answer reached the JSON encoder as bytes: a 500."""
    assert v1(server, "bytes-matrix") == [["ab", "c"], ["d", "e"]]


def test_a_flavor_without_python_function_names_it(server: ServerProcess, root: Path) -> None:
    """An MLmodel with only a framework flavor failed with MLflow's bare 'does not have the
    python_function flavor', naming neither the flavor it has nor what can serve it."""
    model = root / "torch-only"
    model.mkdir()
    (model / "MLmodel").write_text(
        "flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.1.0\n"
        "mlflow_version: 2.9.0\n"
    )
    response = server.post("/v2/repository/models/torch-only/load")
    assert response.status_code == 500, response.text
    message = response.json()["error"]
    for words in ("'pytorch'", "python_function", "modelport/pytorch"):
        assert words in message, message


def test_a_missing_loader_module_is_named_as_such(server: ServerProcess, root: Path) -> None:
    """A python_function loader_module that cannot be imported was reported as a package to
    install from requirements.txt, which lists no such thing: it is the model's own code."""
    model = root / "own-loader"
    shutil.copytree(root / "none", model)
    mlmodel = (model / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.model" in mlmodel
    (model / "MLmodel").write_text(mlmodel.replace("mlflow.pyfunc.model", "team_models.loader"))
    response = server.post("/v2/repository/models/own-loader/load")
    assert response.status_code == 500, response.text
    message = response.json()["error"]
    for words in ("loader_module 'team_models.loader'", "code_paths"):
        assert words in message, message
