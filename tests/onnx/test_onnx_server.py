"""ONNX runtime against real servers: graphs built here with skl2onnx and onnx.helper."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import ml_dtypes
import numpy as np
import pytest

from tests.servers import ServerProcess, output_datatype, start_server, triton_infer

onnx = pytest.importorskip("onnx")  # the `test` extra; `make test` installs it
ort = pytest.importorskip("onnxruntime")  # the `onnx` extra
skl2onnx = pytest.importorskip("skl2onnx")

from onnx import TensorProto, helper  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tests.onnx.graphs import (  # noqa: E402
    add_graph,
    brain_graph,
    counter_graph,
    half_graph,
    iris_onnx,
    mixed_graph,
    narrow_graph,
    reshape_graph,
    save,
    stack_graph,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One model repository (a subdirectory per model) plus the fitted iris classifier."""
    root = tmp_path_factory.mktemp("onnx-models")
    iris = load_iris()
    classifier = LogisticRegression(max_iter=500, random_state=0).fit(iris.data, iris.target)
    for name, zipmap in (("iris", False), ("zipmap", True)):
        (root / name).mkdir()
        onnx.save(iris_onnx(classifier, iris.data[:1], zipmap), root / name / "model.onnx")
    save(half_graph(), root / "half" / "model.onnx")
    save(mixed_graph(), root / "mixed" / "model.onnx")
    save(brain_graph(), root / "brain" / "model.onnx")
    save(narrow_graph(), root / "narrow" / "model.onnx")
    save(add_graph(), root / "add" / "model.onnx")
    save(reshape_graph(), root / "reshape" / "model.onnx")
    save(stack_graph(), root / "stack" / "model.onnx")
    for name, element in (("u8", TensorProto.UINT8), ("i32", TensorProto.INT32)):
        save(identity_graph(name, element), root / name / "model.onnx")
    return {"root": root, "classifier": classifier, "rows": iris.data.astype(np.float32)}


@pytest.fixture(scope="module")
def server(models):
    process = start_server("onnx", models["root"], "--nthread=1")
    yield process
    process.stop()


def v2(name: str, array: np.ndarray, datatype: str) -> dict:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": array.ravel().tolist(),
    }


def identity_graph(name: str, element: int) -> onnx.GraphProto:
    """A rank-1 input of one element type, answered as is."""
    return helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", element, ["n"])],
        [helper.make_tensor_value_info("y", element, ["n"])],
    )


def error_of(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_metadata_comes_from_the_session(server: ServerProcess):
    iris = server.get("/v2/models/iris").json()
    assert iris["platform"] == "onnx"
    assert iris["parameters"]["execution_provider"] in ort.get_available_providers()
    assert iris["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert iris["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    mixed = server.get("/v2/models/mixed").json()
    assert mixed["inputs"] == [
        {"name": "ids", "datatype": "INT64", "shape": [-1]},
        {"name": "words", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [(o["name"], o["datatype"]) for o in mixed["outputs"]] == [
        ("next_ids", "INT64"),
        ("positive", "BOOL"),
        ("echo", "BYTES"),
        ("codes", "INT64"),
    ]
    assert server.get("/v2/models/half").json()["inputs"][0] == {
        "name": "x",
        "datatype": "FP16",
        "shape": [-1, 3],
    }
    brain = server.get("/v2/models/brain").json()
    assert brain["inputs"][0]["datatype"] == "BF16"
    # ZipMap's dictionaries are no tensors: metadata lists only what can be answered.
    zipmap = server.get("/v2/models/zipmap").json()
    assert [o["name"] for o in zipmap["outputs"]] == ["output_label"]


def test_float_input_several_outputs_match_scikit_learn(server: ServerProcess, models):
    rows = models["rows"][::30]
    response = server.post("/v2/models/iris/infer", json={"inputs": [v2("X", rows, "FP32")]})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert list(outputs) == ["label", "probabilities"]
    assert outputs["label"]["datatype"] == "INT64"
    np.testing.assert_array_equal(outputs["label"]["data"], models["classifier"].predict(rows))
    probabilities = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, models["classifier"].predict_proba(rows), atol=1e-5)


def test_requested_outputs_only_and_positional_sole_input(server: ServerProcess, models):
    rows = models["rows"][:3]
    result = triton_infer(
        server, "iris", [("input-0", rows, "FP32", True)], {"probabilities": True}
    )
    assert result.as_numpy("label") is None
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), models["classifier"].predict_proba(rows), atol=1e-5
    )
    zipmap = server.post(
        "/v2/models/zipmap/infer",
        json={"inputs": [v2("X", rows, "FP32")], "outputs": [{"name": "output_label"}]},
    )
    assert zipmap.status_code == 200, zipmap.text
    assert zipmap.json()["outputs"][0]["data"] == models["classifier"].predict(rows).tolist()


def test_v1_rows_for_a_single_input_model(server: ServerProcess, models):
    rows = models["rows"][[0, 60, 120]]
    response = server.post("/v1/models/iris:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == models["classifier"].predict(rows).tolist()
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions],
        models["classifier"].predict_proba(rows),
        atol=1e-5,
    )
    # JSON integers take the declared FP32.
    ints = server.post("/v1/models/iris:predict", json={"instances": [[5, 3, 1, 0]]})
    assert ints.status_code == 200, ints.text


def test_float16_travels_exactly_in_binary(server: ServerProcess):
    half = np.array([[1.5, -2.25, 3.0], [0.1, 0.2, 600]], dtype=np.float16)
    result = triton_infer(server, "half", [("x", half, "FP16", True)], {"y": True})
    assert result.get_output("y")["datatype"] == "FP16"
    np.testing.assert_array_equal(result.as_numpy("y"), half * np.float16(2))


def test_int64_and_string_inputs_by_name(server: ServerProcess):
    ids = np.array([-1, 0, 7], dtype=np.int64)
    words = np.array([b"ab", "caf\u00e9".encode(), b"x y"], dtype=object)
    inputs = [("words", words, "BYTES", True), ("ids", ids, "INT64", False)]
    result = triton_infer(server, "mixed", inputs)
    np.testing.assert_array_equal(result.as_numpy("next_ids"), [0, 1, 8])
    np.testing.assert_array_equal(result.as_numpy("positive"), [False, False, True])
    assert result.as_numpy("echo").tolist() == words.tolist()
    np.testing.assert_array_equal(result.as_numpy("codes"), [1, 2, -1])
    body = {
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [1], "data": [41]},
            {"name": "words", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
        ],
        "outputs": [{"name": "codes"}, {"name": "echo"}, {"name": "next_ids"}],
    }
    response = server.post("/v2/models/mixed/infer", json=body)
    assert response.status_code == 200, response.text
    assert [(o["name"], o["data"]) for o in response.json()["outputs"]] == [
        ("codes", [-1]),
        ("echo", ["hi"]),
        ("next_ids", [42]),
    ]
    # V1 objects name the inputs; each column takes its declared datatype.
    instances = [{"ids": 1, "words": "a"}, {"ids": 2, "words": "ab"}]
    v1 = server.post("/v1/models/mixed:predict", json={"instances": instances})
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"][1] == {
        "next_ids": 3,
        "positive": True,
        "echo": "ab",
        "codes": 1,
    }


def test_grpc_carries_every_datatype(server: ServerProcess):
    ids = np.array([5, -5], dtype=np.int64)
    words = np.array([b"ab", b"zz"], dtype=object)
    inputs = [("ids", ids, "INT64", True), ("words", words, "BYTES", True)]
    result = triton_infer(server, "mixed", inputs, protocol="grpc")
    assert output_datatype(result, "positive") == "BOOL"
    np.testing.assert_array_equal(result.as_numpy("positive"), [True, False])
    np.testing.assert_array_equal(result.as_numpy("codes"), [1, -1])
    assert result.as_numpy("echo").tolist() == [b"ab", b"zz"]
    half = np.array([[0.5, 1.0, -2.0]], dtype=np.float16)
    doubled = triton_infer(server, "half", [("x", half, "FP16", True)], protocol="grpc")
    assert output_datatype(doubled, "y") == "FP16"
    np.testing.assert_array_equal(doubled.as_numpy("y"), half * np.float16(2))


def test_bfloat16_in_and_out(server: ServerProcess):
    brain = np.array([0.5, 1.25, -3.0, 100.0], dtype=ml_dtypes.bfloat16)
    result = triton_infer(
        server, "brain", [("x", brain, "BF16", True)], {"wide": True, "narrow": True}
    )
    np.testing.assert_array_equal(result.as_numpy("wide"), [0.5, 1.25, -3.0, 100.0])
    assert result.get_output("narrow")["datatype"] == "BF16"
    np.testing.assert_array_equal(
        np.asarray(result.as_numpy("narrow"), dtype=np.float32), [0.5, 1.25, -3.0, 100.0]
    )


def test_bfloat16_out_of_a_model_that_takes_none(server: ServerProcess):
    """Running to OrtValues (for the bfloat16 words) takes OrtValues only: numpy inputs,
    JSON or binary (read-only), were once refused with a 500."""
    x = np.array([0.5, 1.25, -3.0], dtype=np.float32)
    for binary in (False, True):
        result = triton_infer(server, "narrow", [("x", x, "FP32", binary)], {"narrow": True})
        assert result.get_output("narrow")["datatype"] == "BF16"
        np.testing.assert_array_equal(np.asarray(result.as_numpy("narrow"), np.float32), x)
    both = triton_infer(server, "narrow", [("x", x, "FP32", True)], protocol="grpc")
    np.testing.assert_array_equal(np.asarray(both.as_numpy("narrow"), np.float32), x)
    assert [float(text) for text in both.as_numpy("text")] == x.tolist()


def test_bad_shapes_dtypes_and_names_are_400_naming_the_input(server: ServerProcess, models):
    rows = models["rows"][:2]
    ids = np.array([1, 2], dtype=np.int64)
    words = np.array(["a", "b"], dtype=object)
    cases = [
        (
            "iris",
            [v2("X", rows.astype(np.float64), "FP64")],
            "input 'X': model 'iris' takes FP32, got FP64",
        ),
        (
            "iris",
            [v2("X", rows[:, :3], "FP32")],
            "input 'X': shape [2, 3] does not fit model 'iris' shape [-1, 4]",
        ),
        ("iris", [v2("X", rows.ravel(), "FP32")], "input 'X': shape [8] does not fit"),
        (
            "mixed",
            [v2("ids", ids, "INT64")],
            "missing input 'words'; model 'mixed' takes: ids, words",
        ),
        (
            "mixed",
            [v2("ids", ids, "INT64"), v2("nope", ids, "INT64")],
            "unknown input 'nope'; model 'mixed' takes: ids, words",
        ),
        (
            "mixed",
            [v2("ids", ids, "INT32"), v2("words", words, "BYTES")],
            "input 'ids': model 'mixed' takes INT64, got INT32",
        ),
        (
            "mixed",
            [v2("ids", ids, "INT64"), v2("words", ids, "INT64")],
            "input 'words': model 'mixed' takes BYTES",
        ),
    ]
    for model, inputs, message in cases:
        response = server.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
        assert message in error_of(response), message
    vectors = [v2("a", np.ones(2, np.float32), "FP32"), v2("b", np.ones(3, np.float32), "FP32")]
    assert "model 'add' rejected the input" in error_of(
        server.post("/v2/models/add/infer", json={"inputs": vectors})
    )
    unknown = {"inputs": [v2("X", rows, "FP32")], "outputs": [{"name": "nope"}]}
    assert "unknown output 'nope'; model 'iris' offers: label, probabilities" in error_of(
        server.post("/v2/models/iris/infer", json=unknown)
    )
    dictionaries = {"inputs": [v2("X", rows, "FP32")], "outputs": [{"name": "output_probability"}]}
    assert "not a tensor" in error_of(server.post("/v2/models/zipmap/infer", json=dictionaries))
    decimals = server.post(
        "/v1/models/mixed:predict", json={"instances": [{"ids": 1.5, "words": "a"}]}
    )
    assert "input 'ids': the model takes INT64, got decimals" in error_of(decimals)
    ragged = server.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4], [1]]})
    assert "ragged" in error_of(ragged)
    assert (
        server.post("/v2/models/iris/infer", json={"inputs": [v2("X", rows, "FP32")]}).status_code
        == 200
    )


def test_a_kernel_failure_the_input_is_not_blamed_for_is_a_500(server: ServerProcess):
    body = {"inputs": [v2("x", np.ones(2, np.float32), "FP32")]}
    error = error_of(server.post("/v2/models/reshape/infer", json=body), 500)
    assert "model 'reshape' failed: Fail:" in error
    assert "cannot be reshaped" in error


def test_a_dimension_name_is_one_size_across_inputs(server: ServerProcess):
    """ONNX IR: inputs sharing a dimension name share its size. Concat's kernel words the
    mismatch like a model fault, so it was a 500; it is refused before the session runs."""
    a, b = np.arange(2, dtype=np.float32), np.arange(3, dtype=np.float32)
    body = {"inputs": [v2("a", a, "FP32"), v2("b", b, "FP32")]}
    assert error_of(server.post("/v2/models/stack/infer", json=body)) == (
        "input 'b': shape [3] does not fit model 'stack' shape [n]: n is 2 in input 'a'"
    )
    body = {"inputs": [v2("a", a, "FP32"), v2("b", a + 1, "FP32")]}
    response = server.post("/v2/models/stack/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [0.0, 1.0, 1.0, 2.0]


def refused(model_dir, *flags: str) -> str:
    """Start a server expected to fail its load; return its log."""
    process = start_server("onnx", model_dir, *flags, wait=False)
    try:
        code = process.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.stop()
        pytest.fail(f"server started although its model should be refused:\n{process.log()}")
    assert code != 0
    return process.log()


def test_corrupt_file_fails_the_load_naming_the_file(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07this is no onnx graph")
    log = refused(tmp_path)
    assert f"cannot load model file '{tmp_path / 'broken.onnx'}'" in log


def test_cpu_and_auto_without_cuda_pick_the_cpu_provider(serve, server: ServerProcess, tmp_path):
    save(half_graph(), tmp_path / "model.onnx")
    cpu = serve("onnx", tmp_path, "--model_name=half", "--device=cpu")
    assert '"provider":"CPUExecutionProvider"' in cpu.log()
    expected = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in ort.get_available_providers()
        else "CPUExecutionProvider"
    )
    assert f'"provider":"{expected}"' in server.log()  # the module's server runs with auto


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the no-CUDA failure"
)
def test_cuda_device_without_cuda_fails_at_load(tmp_path):
    save(half_graph(), tmp_path / "model.onnx")
    log = refused(tmp_path, "--device=cuda")
    assert "--device cuda but this ONNX Runtime" in log
    assert "onnxruntime-gpu" in log


def test_select_providers():
    from modelport.runtimes.onnx.model import select_providers

    cpu_only = ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cpu", both) == ["CPUExecutionProvider"]
    assert select_providers("auto", cpu_only) == ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": 0})
    assert select_providers("auto", both) == [cuda, "CPUExecutionProvider"]
    assert select_providers("cuda:1", both)[0] == ("CUDAExecutionProvider", {"device_id": 1})


def counts(url: str, model: str, requests: int) -> list[int]:
    """Send `requests` one-row requests at once; each answer's `rows` (the batch it ran in)."""

    def one(index: int) -> int:
        x = np.full((1, 2), index, dtype=np.float32)
        with httpx.Client(base_url=url, timeout=60) as client:
            response = client.post(
                f"/v2/models/{model}/infer", json={"inputs": [v2("x", x, "FP32")]}
            )
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["y"] == [2.0 * index] * 2  # each request gets its own rows back
        return outputs["rows"][0]

    with ThreadPoolExecutor(requests) as pool:
        return list(pool.map(one, range(requests)))


def test_batching_is_opt_in(serve, tmp_path):
    save(counter_graph(), tmp_path / "model.onnx")
    plain = serve("onnx", tmp_path, "--model_name=counter")
    assert counts(plain.url, "counter", 6) == [1] * 6  # a graph may mix rows: never merged unasked
    plain.stop()
    batched = serve(
        "onnx", tmp_path, "--model_name=counter", "--max_batch_size=8", "--max_batch_time=1.0"
    )
    assert max(counts(batched.url, "counter", 6)) > 1


ONNX_TO_OIP = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}


def test_every_onnx_tensor_type_maps_to_its_oip_datatype(tmp_path):
    """In process: one Identity per element type, metadata read back from the session."""
    from modelport.base.model import ModelSettings
    from modelport.runtimes.onnx.model import ONNXPredictor

    names = [f"t{element}" for element in ONNX_TO_OIP]
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in names],
        "types",
        [
            helper.make_tensor_value_info(n, e, ["n", 2])
            for n, e in zip(names, ONNX_TO_OIP, strict=True)
        ],
        [
            helper.make_tensor_value_info(f"{n}_out", e, ["n", 2])
            for n, e in zip(names, ONNX_TO_OIP, strict=True)
        ],
    )
    save(graph, tmp_path / "model.onnx")
    predictor = ONNXPredictor(ModelSettings("types", tmp_path, parameters={"device": "cpu"}))
    predictor.load()
    expected = [
        (name, datatype, [-1, 2])
        for name, datatype in zip(names, ONNX_TO_OIP.values(), strict=True)
    ]
    assert [(s.name, s.datatype, s.shape) for s in predictor.inputs()] == expected
    assert [s.datatype for s in predictor.outputs()] == list(ONNX_TO_OIP.values())


@pytest.mark.parametrize(
    ("model", "datatype", "shape", "data", "message"),
    [
        ("u8", "UINT8", [3], [300, -1, 255], "values out of range for UINT8"),
        ("i32", "INT32", [2], [2**40, 1], "values out of range for INT32"),
        ("half", "FP16", [1, 3], [1e6, 1, 1], "non-finite data for a FP16 tensor"),
        ("half", "FP16", [1, 3], [True, False, True], "boolean data for a FP16 tensor"),
        ("half", "FP16", [1, 3], [1.0, True, 2.0], "boolean data for a FP16 tensor"),
        ("i32", "INT32", [2], [7, False], "boolean data for a INT32 tensor"),
    ],
)
def test_v1_refuses_what_v2_refuses(server: ServerProcess, model, datatype, shape, data, message):
    """V1 instances take the model's datatype through V2's checks: a value out of range is
    a 400 naming the input, never wrapped (300 -> 44) or turned into infinity."""
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}
    assert message in error_of(server.post(f"/v2/models/{model}/infer", json=body))
    instances = data if len(shape) == 1 else [data]
    v1 = server.post(f"/v1/models/{model}:predict", json={"instances": instances})
    assert error_of(v1).startswith("input 'input-0': ")  # bare rows: V1's default name
    assert message in error_of(v1)
    edges = [0, 255] if model == "u8" else [-(2**31), 2**31 - 1]
    if model != "half":
        fine = server.post(f"/v1/models/{model}:predict", json={"instances": edges})
        assert fine.status_code == 200, fine.text
        assert fine.json()["predictions"] == edges
