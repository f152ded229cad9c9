"""A model's fault is a 5xx and the client's mistake a 4xx, told apart by what shows.

One sklearn server hosts small models that misbehave on purpose (tests/models.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.models import ColumnModel, FaultyModel, NonFiniteModel, pickled
from tests.servers import start_server, triton_infer

ROW = [1.0, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    pickled(root / "keyerror", FaultyModel("KeyError"))
    pickled(root / "typeerror", FaultyModel("TypeError"))
    pickled(root / "column", ColumnModel())
    pickled(root / "nonfinite", NonFiniteModel())
    process = start_server("sklearn", root)
    yield process
    process.stop()


def v2(rows, datatype="FP64", **extra):
    array = np.asarray(rows)
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(array.shape),
                "datatype": datatype,
                "data": array.ravel().tolist(),
            }
        ],
        **extra,
    }


@pytest.mark.parametrize("model", ["keyerror", "typeerror"])
def test_keyerror_and_typeerror_from_model_code_are_500(server, model):
    for path, body in (
        (f"/v2/models/{model}/infer", v2([ROW])),
        (f"/v1/models/{model}:predict", {"instances": [ROW]}),
    ):
        response = server.post(path, json=body)
        assert response.status_code == 500, response.text
        assert f"model '{model}' failed" in response.json()["error"]


def test_typeerror_on_text_input_is_the_clients(server):
    response = server.post("/v1/models/typeerror:predict", json={"instances": [["a"] * 4]})
    assert response.status_code == 400, response.text


def test_missing_column_is_the_clients_mistake(server):
    response = server.post("/v1/models/column:predict", json={"instances": [{"a": 1}]})
    assert response.status_code == 400, response.text
    assert "no column 'b'" in response.json()["error"]
    good = server.post("/v1/models/column:predict", json={"instances": [{"b": 2}]})
    assert good.json() == {"predictions": [4]}


def test_non_finite_outputs_refused_in_json_exact_in_binary(server):
    response = server.post("/v2/models/nonfinite/infer", json=v2([ROW] * 4))
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert "NaN or infinity" in error and "binary_data" in error
    result = triton_infer(
        server, "nonfinite", [("input-0", np.array([ROW] * 4), "FP64", True)], {"output-0": True}
    )
    values = result.as_numpy("output-0")
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf
    assert values[3] == 1.5
    # The request-level switch, given as a string (OIP parameters may be strings).
    body = v2([ROW] * 4, parameters={"binary_data_output": "true"})
    binary = server.post("/v2/models/nonfinite/infer", json=body)
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"


def test_binary_data_false_as_a_string_means_json(server):
    def ask(flag):
        body = v2([ROW], outputs=[{"name": "output-0", "parameters": {"binary_data": flag}}])
        return server.post("/v2/models/nonfinite/infer", json=body)

    # "false" was once taken as true: the NaN went out in binary instead of being refused.
    refused = ask("false")
    assert refused.status_code == 500 and "binary_data" in refused.json()["error"]
    assert ask("True").headers["content-type"] == "application/octet-stream"


def test_faults_leave_no_traceback_in_the_body(server):
    response = server.post("/v2/models/keyerror/infer", json=v2([ROW]))
    assert "Traceback" not in response.text
