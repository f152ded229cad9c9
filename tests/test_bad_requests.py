"""Every client mistake is a 4xx with `{"error": ...}` naming it, and the server keeps serving."""

from __future__ import annotations

import pytest

from tests.models import IRIS_ROWS, iris_logistic
from tests.servers import start_server

GOOD_V2 = {
    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROWS[0]}]
}


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    directory = iris_logistic(tmp_path_factory.mktemp("iris"))
    server = start_server("sklearn", directory, "--model_name=iris", "--max_request_size=4096")
    yield server
    server.stop()


ZERO_TIMES_HUGE_HEADER = (
    b'{"inputs":[{"name":"input-0","shape":[9223372036854775808,0],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":0}}]}'
)

OVERRUN_HEADER = (
    b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":16}}]}'
)


def v2_input(**overrides):
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROWS[0]}
    tensor.update(overrides)
    return {"inputs": [tensor]}


CASES = [
    # (id, method path, body kwargs, status, words the error must contain)
    (
        "malformed-json",
        "/v2/models/iris/infer",
        {"content": b'{"inputs": ['},
        400,
        ["not valid JSON"],
    ),
    ("v1-malformed-json", "/v1/models/iris:predict", {"content": b"{instances"}, 400, ["JSON"]),
    (
        "missing-instances",
        "/v1/models/iris:predict",
        {"json": {"rows": IRIS_ROWS}},
        400,
        ["instances"],
    ),
    ("empty-instances", "/v1/models/iris:predict", {"json": {"instances": []}}, 400, ["instances"]),
    (
        "ragged-instances",
        "/v1/models/iris:predict",
        {"json": {"instances": [[1, 2], [3]]}},
        400,
        ["ragged"],
    ),
    (
        "v1-wrong-features",
        "/v1/models/iris:predict",
        {"json": {"instances": [[1.0, 2.0, 3.0]]}},
        400,
        ["4 features", "got 3"],
    ),
    (
        "v1-non-numeric",
        "/v1/models/iris:predict",
        {"json": {"instances": [["a", "b", "c", "d"]]}},
        400,
        ["rejected"],
    ),
    ("missing-inputs", "/v2/models/iris/infer", {"json": {"outputs": []}}, 400, ["inputs"]),
    (
        "missing-datatype",
        "/v2/models/iris/infer",
        {"json": {"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}},
        400,
        ["datatype"],
    ),
    (
        "missing-shape",
        "/v2/models/iris/infer",
        {"json": {"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2, 3, 4]}]}},
        400,
        ["shape"],
    ),
    (
        "missing-data",
        "/v2/models/iris/infer",
        {"json": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}},
        400,
        ["data"],
    ),
    (
        "unknown-datatype",
        "/v2/models/iris/infer",
        {"json": v2_input(datatype="FP128")},
        400,
        ["FP128"],
    ),
    (
        "size-mismatch",
        "/v2/models/iris/infer",
        {"json": v2_input(shape=[2, 4])},
        400,
        ["needs 8 elements", "has 4"],
    ),
    ("bad-shape", "/v2/models/iris/infer", {"json": v2_input(shape=[1, -4])}, 400, ["shape"]),
    (
        "rank-65",
        "/v2/models/iris/infer",
        {"json": v2_input(shape=[1] * 65, data=[1])},
        400,
        ["65 dimensions (at most 64)"],
    ),
    (
        "huge-dim-times-zero",
        "/v2/models/iris/infer",
        {"json": v2_input(shape=[2**63, 0], data=[])},
        400,
        ["input-0", "shape"],
    ),
    (
        "huge-dim-times-zero-binary",
        "/v2/models/iris/infer",
        {
            "content": ZERO_TIMES_HUGE_HEADER,
            "headers": {"Inference-Header-Content-Length": str(len(ZERO_TIMES_HUGE_HEADER))},
        },
        400,
        ["input-0", "shape"],
    ),
    (
        "wrong-features",
        "/v2/models/iris/infer",
        {"json": v2_input(shape=[1, 3], data=[1, 2, 3])},
        400,
        ["4 features", "got 3"],
    ),
    (
        "non-numeric",
        "/v2/models/iris/infer",
        {"json": v2_input(data=["a", "b", "c", "d"])},
        400,
        ["non-numeric", "FP32"],
    ),
    (
        "null-in-numeric",
        "/v2/models/iris/infer",
        {"json": v2_input(data=[1, None, 3, 4])},
        400,
        ["FP32"],
    ),
    (
        "float-for-int",
        "/v2/models/iris/infer",
        {"json": v2_input(datatype="INT32", data=[1.5, 2, 3, 4])},
        400,
        ["INT32"],
    ),
    (
        "out-of-range",
        "/v2/models/iris/infer",
        {"json": v2_input(datatype="UINT8", data=[1, 2, 3, 300])},
        400,
        ["range", "UINT8"],
    ),
    (
        "bool-for-float",
        "/v2/models/iris/infer",
        {"json": v2_input(datatype="BOOL", data=[1, 0, 1, 0])},
        400,
        ["BOOL"],
    ),
    (
        "bytes-not-strings",
        "/v2/models/iris/infer",
        {"json": v2_input(datatype="BYTES", data=[1, 2, 3, 4])},
        400,
        ["BYTES"],
    ),
    (
        "unknown-output",
        "/v2/models/iris/infer",
        {"json": {**GOOD_V2, "outputs": [{"name": "nope"}]}},
        400,
        ["nope", "predict_proba"],
    ),
    (
        "bad-header-length",
        "/v2/models/iris/infer",
        {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}},
        400,
        ["Inference-Header-Content-Length"],
    ),
    (
        "header-length-not-int",
        "/v2/models/iris/infer",
        {"content": b"{}", "headers": {"Inference-Header-Content-Length": "x"}},
        400,
        ["not an integer"],
    ),
    (
        "binary-size-overrun",
        "/v2/models/iris/infer",
        {
            "content": OVERRUN_HEADER + b"abcd",
            "headers": {"Inference-Header-Content-Length": str(len(OVERRUN_HEADER))},
        },
        400,
        ["binary_data_size"],
    ),
    ("unknown-model-v2", "/v2/models/nope/infer", {"json": GOOD_V2}, 404, ["nope", "not found"]),
    (
        "unknown-model-v1",
        "/v1/models/nope:predict",
        {"json": {"instances": IRIS_ROWS}},
        404,
        ["nope"],
    ),
    (
        "unknown-version",
        "/v2/models/iris/versions/9/infer",
        {"json": GOOD_V2},
        404,
        ["version '9'"],
    ),
    ("too-large", "/v2/models/iris/infer", {"content": b" " * 5000}, 413, ["exceeds"]),
    ("unknown-route", "/v3/whatever", {"json": {}}, 404, ["no route"]),
    ("wrong-method", "/v2/health/live", {"json": {}}, 405, ["not allowed"]),
]


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_then_good_request(iris, path, kwargs, status, words):
    response = iris.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"], body
    # The server keeps serving.
    good = iris.post("/v2/models/iris/infer", json=GOOD_V2)
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == [1]


def test_no_tracebacks_in_log_for_client_errors(iris):
    iris.post("/v2/models/iris/infer", json=v2_input(shape=[9, 9]))
    assert "Traceback" not in iris.log()
