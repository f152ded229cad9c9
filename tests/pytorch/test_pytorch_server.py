"""PyTorch runtime against real servers: TorchScript and torch.export models built here."""

from __future__ import annotations

import io
import subprocess
import zipfile

import ml_dtypes
import numpy as np
import pytest

from tests.servers import ServerProcess, output_datatype, start_server, triton_infer

torch = pytest.importorskip("torch")  # the `pytorch` extra; `make test` installs it

pytestmark = [
    pytest.mark.heavy,
    # torch 2.13 deprecates TorchScript in favour of torch.export; both formats are served.
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning"),
]

RNG = np.random.default_rng(7)


class TwoInputs(torch.nn.Module):
    """Two named inputs, a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.linear(x)
        return {"sum": hidden + y, "prod": hidden * y}


class Classifier(torch.nn.Module):
    """One input, a tuple of (logits, probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(x)
        return logits, torch.softmax(logits, dim=1)


class Doubler(torch.nn.Module):
    """Keeps the input dtype (FP16, BF16...) so exact dtype mapping shows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Faulty(torch.nn.Module):
    """Fails like a device does (a RuntimeError that says nothing about the input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 100):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return x + 1


class Indexer(torch.nn.Module):
    """Indexes one input with another: the indices are the client's."""

    def forward(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return x[i]


class Embedder(torch.nn.Module):
    """Float parameters, integer input: token ids must stay integers."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One model repository (a subdirectory per model) plus the eager modules."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("torch-models")
    two, classifier = TwoInputs().eval(), Classifier().eval()
    embedder = Embedder().eval()
    for name in ("two", "classifier", "doubler", "exported", "faulty", "indexer", "embedder"):
        (root / name).mkdir()
    torch.jit.save(torch.jit.script(Indexer()), root / "indexer" / "model.pt")
    torch.jit.save(torch.jit.script(embedder), root / "embedder" / "model.pt")
    torch.jit.save(torch.jit.script(Faulty()), root / "faulty" / "model.pt")
    torch.jit.save(torch.jit.script(two), root / "two" / "model.pt")
    torch.jit.save(torch.jit.script(classifier), root / "classifier" / "model.pt")
    torch.jit.save(torch.jit.script(Doubler()), root / "doubler" / "model.pth")
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        two,
        (torch.randn(2, 3), torch.randn(2, 2)),
        dynamic_shapes={"x": {0: batch}, "y": {0: batch}},
    )
    torch.export.save(program, root / "exported" / "model.pt2")
    return {"root": root, "two": two, "classifier": classifier, "embedder": embedder}


@pytest.fixture(scope="module")
def server(models):
    process = start_server("pytorch", models["root"], "--nthread=1")
    yield process
    process.stop()


def eager(module: torch.nn.Module, *arrays: np.ndarray):
    with torch.no_grad():
        return module(*(torch.from_numpy(array) for array in arrays))


def v2_inputs(x: np.ndarray, y: np.ndarray, names=("x", "y")) -> list[dict]:
    return [
        {"name": name, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
        for name, a in zip(names, (x, y), strict=True)
    ]


def outputs_of(body: dict) -> dict[str, np.ndarray]:
    return {
        out["name"]: np.array(out["data"], dtype=np.float32).reshape(out["shape"])
        for out in body["outputs"]
    }


def test_v2_json_by_name_returns_dict_outputs(server: ServerProcess, models):
    x = RNG.standard_normal((3, 3)).astype(np.float32)
    y = RNG.standard_normal((3, 2)).astype(np.float32)
    response = server.post("/v2/models/two/infer", json={"inputs": v2_inputs(x, y)[::-1]})
    assert response.status_code == 200, response.text
    outputs = outputs_of(response.json())
    expected = eager(models["two"], x, y)
    assert set(outputs) == {"sum", "prod"}
    np.testing.assert_allclose(outputs["sum"], expected["sum"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(outputs["prod"], expected["prod"].numpy(), rtol=1e-6)


def test_v2_inputs_bind_by_position(server: ServerProcess, models):
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    y = RNG.standard_normal((2, 2)).astype(np.float32)
    body = {"inputs": v2_inputs(x, y, names=("input-0", "input-1"))}
    response = server.post("/v2/models/two/infer", json=body)
    assert response.status_code == 200, response.text
    expected = eager(models["two"], x, y)
    np.testing.assert_allclose(outputs_of(response.json())["sum"], expected["sum"].numpy())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["two", "exported"])
def test_binary_round_trip_with_tritonclient(server: ServerProcess, models, model, protocol):
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    y = RNG.standard_normal((5, 2)).astype(np.float32)
    inputs = [("x", x, "FP32", True), ("y", y, "FP32", True)]
    result = triton_infer(server, model, inputs, {"prod": True}, protocol)
    expected = eager(models["two"], x, y)["prod"].numpy()
    assert output_datatype(result, "prod") == "FP32"
    assert result.as_numpy("sum") is None
    np.testing.assert_allclose(result.as_numpy("prod"), expected, rtol=1e-6)


def test_exported_program_metadata_and_exact_dtypes(server: ServerProcess, models):
    meta = server.get("/v2/models/exported").json()
    assert meta["platform"] == "pytorch"
    assert meta["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert [out["name"] for out in meta["outputs"]] == ["sum", "prod"]
    assert meta["outputs"][0]["shape"] == [-1, 2]
    x = RNG.standard_normal((1, 3))
    y = RNG.standard_normal((1, 2))
    body = {"inputs": v2_inputs(x, y)}
    body["inputs"][0]["datatype"] = "FP64"
    response = server.post("/v2/models/exported/infer", json=body)
    assert response.status_code == 400
    assert "takes FP32 for 'x', got FP64" in response.json()["error"]
    good = server.post("/v2/models/exported/infer", json={"inputs": v2_inputs(x, y)})
    assert good.status_code == 200, good.text


def test_exported_program_refuses_a_wrong_rank_naming_the_shapes(server: ServerProcess):
    """The program's own check indexes the input's sizes: a rank too low answered the
    bare `tuple index out of range`; the declared shape is checked before it runs."""
    y = np.ones((1, 2), dtype=np.float32)
    cases = [
        (np.ones(3, dtype=np.float32), "shape [3] does not fit model 'exported' shape [-1, 3]"),
        (np.ones((1, 1, 3), dtype=np.float32), "shape [1, 1, 3] does not fit"),
        (np.ones((1, 4), dtype=np.float32), "shape [1, 4] does not fit"),
    ]
    for x, message in cases:
        body = {"inputs": v2_inputs(x, y)}
        response = server.post("/v2/models/exported/infer", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"input 'x': {message}")


def test_torchscript_metadata_names_forward_arguments(server: ServerProcess):
    meta = server.get("/v2/models/two").json()
    assert [spec["name"] for spec in meta["inputs"]] == ["x", "y"]
    assert meta["inputs"][0]["datatype"] == "FP32"
    tuple_meta = server.get("/v2/models/classifier").json()
    assert [spec["name"] for spec in tuple_meta["outputs"]] == ["output-0", "output-1"]


def test_tuple_outputs_and_v1_rows(server: ServerProcess, models):
    rows = RNG.standard_normal((2, 4)).round(3)
    response = server.post("/v1/models/classifier:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    logits, probabilities = eager(models["classifier"], rows.astype(np.float32))
    assert len(predictions) == 2
    assert set(predictions[0]) == {"output-0", "output-1"}
    np.testing.assert_allclose(
        [p["output-1"] for p in predictions], probabilities.numpy(), rtol=1e-5
    )
    np.testing.assert_allclose([p["output-0"] for p in predictions], logits.numpy(), rtol=1e-5)
    v2 = server.post(
        "/v2/models/classifier/infer",
        json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": rows.tolist()}],
            "outputs": [{"name": "output-1"}],
        },
    )
    assert [out["name"] for out in v2.json()["outputs"]] == ["output-1"]


def test_v1_instances_as_named_inputs(server: ServerProcess, models):
    x = RNG.standard_normal((2, 3)).round(3)
    y = RNG.standard_normal((2, 2)).round(3)
    instances = [{"x": x[i].tolist(), "y": y[i].tolist()} for i in range(2)]
    response = server.post("/v1/models/two:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = eager(models["two"], x.astype(np.float32), y.astype(np.float32))
    np.testing.assert_allclose([p["sum"] for p in predictions], expected["sum"].numpy(), rtol=1e-5)
    # The exported program declares FP32: V1 integers take that dtype.
    ints = [{"x": [1, 2, 3], "y": [0, 1]}]
    exported = server.post("/v1/models/exported:predict", json={"instances": ints})
    assert exported.status_code == 200, exported.text
    assert set(exported.json()["predictions"][0]) == {"sum", "prod"}


def test_half_precision_travels_exactly_in_binary(server: ServerProcess):
    half = np.array([[1.5, -2.25, 3.0]], dtype=np.float16)
    result = triton_infer(server, "doubler", [("x", half, "FP16", True)])
    assert result.get_output("output-0")["datatype"] == "FP16"
    np.testing.assert_array_equal(result.as_numpy("output-0"), half * 2)

    brain = np.array([[0.5, 1.25, -3.0, 100.0]], dtype=ml_dtypes.bfloat16)
    result = triton_infer(server, "doubler", [("x", brain, "BF16", True)], {"output-0": True})
    assert result.get_output("output-0")["datatype"] == "BF16"
    np.testing.assert_array_equal(
        np.asarray(result.as_numpy("output-0"), dtype=np.float32), [[1.0, 2.5, -6.0, 200.0]]
    )
    # JSON cannot carry half floats: the client is told to ask for binary.
    body = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [1.5]}]}
    response = server.post("/v2/models/doubler/infer", json=body)
    assert response.status_code == 400
    assert "binary_data" in response.json()["error"]


def test_bad_inputs_are_400_naming_the_problem(server: ServerProcess):
    x = np.ones((1, 3), dtype=np.float32)
    y = np.ones((1, 2), dtype=np.float32)
    cases = [
        ({"inputs": v2_inputs(x, y)[:1]}, "missing input 'y'"),
        (
            {"inputs": [*v2_inputs(x, y, names=("a", "b")), v2_inputs(x, y)[0]]},
            "takes 2 input(s) (x, y), got 3",
        ),
        ({"inputs": v2_inputs(np.ones((1, 4), dtype=np.float32), y)}, "rejected the input"),
        (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            "BYTES",
        ),
        ({"inputs": v2_inputs(x, y), "outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
    ]
    for body, message in cases:
        response = server.post("/v2/models/two/infer", json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    ragged = server.post("/v1/models/classifier:predict", json={"instances": [[1, 2], [3]]})
    assert ragged.status_code == 400
    assert "ragged" in ragged.json()["error"]
    good = server.post("/v2/models/two/infer", json={"inputs": v2_inputs(x, y)})
    assert good.status_code == 200


def test_device_is_logged_at_load(server: ServerProcess):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f'"device":"{expected}' in server.log()


def refused(model_dir, *flags: str) -> str:
    """Start a server expected to fail its load; return its log."""
    process = start_server("pytorch", model_dir, *flags, wait=False)
    try:
        code = process.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.stop()
        pytest.fail(f"server started although its model should be refused:\n{process.log()}")
    assert code != 0
    return process.log()


def test_full_pickle_is_refused_with_export_advice(tmp_path):
    torch.save(Classifier(), tmp_path / "model.pt")
    log = refused(tmp_path)
    assert "pickled Python object" in log
    assert "torch.jit.save(torch.jit.script(model)" in log


def test_state_dict_is_refused_as_weights_only(tmp_path):
    torch.save(Classifier().state_dict(), tmp_path / "model.pth")
    log = refused(tmp_path)
    assert "holds only weights" in log
    assert "torch.export" in log


class Trap:
    """Unpickling this creates a file: proof that a loader ran code from the model file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_exported_program_never_unpickles_objects(tmp_path, models):
    """torch.export.load would fall back to full unpickling for sample inputs: not here."""
    marker = tmp_path / "unpickled"
    poisoned = io.BytesIO()
    torch.save((Trap(marker),), poisoned)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    source = models["root"] / "exported" / "model.pt2"
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(model_dir / "model.pt2", "w") as copy,
    ):
        for item in original.infolist():
            data = original.read(item.filename)
            if "/data/sample_inputs/" in item.filename:
                data = poisoned.getvalue()
            copy.writestr(item, data)
    log = refused(model_dir)
    assert "holds pickled Python objects beyond tensors" in log
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure")
def test_cuda_device_without_gpu_fails_at_load(tmp_path):
    torch.jit.save(torch.jit.script(Doubler()), tmp_path / "model.pt")
    log = refused(tmp_path, "--device=cuda")
    assert "--device cuda but CUDA is not available" in log


@pytest.mark.parametrize("model", ["exported", "two", "classifier", "doubler"])
def test_metadata_describes_what_infer_answers(server: ServerProcess, model: str):
    from tests.servers import assert_metadata_describes_infer

    x, y = np.ones((2, 3), dtype=np.float32), np.ones((2, 2), dtype=np.float32)
    inputs = {
        "exported": v2_inputs(x, y),
        "two": v2_inputs(x, y),
        "classifier": v2_inputs(np.ones((2, 4), dtype=np.float32), y)[:1],
        "doubler": v2_inputs(x, y)[:1],
    }[model]
    # An exported program declares its outputs; TorchScript shows them once it has answered.
    assert_metadata_describes_infer(server, model, inputs, infer_first=model != "exported")


def test_runtime_error_that_is_not_the_inputs_fault_is_500(server: ServerProcess):
    fine = np.ones((1, 3), dtype=np.float32)
    response = server.post("/v2/models/faulty/infer", json={"inputs": v2_inputs(fine, fine)[:1]})
    assert response.status_code == 200, response.text
    big = np.full((1, 3), 50, dtype=np.float32)
    fault = server.post("/v2/models/faulty/infer", json={"inputs": v2_inputs(big, big)[:1]})
    assert fault.status_code == 500, fault.text
    assert "illegal memory access" in fault.json()["error"]


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "FP16", "BOOL"])
def test_input_of_another_dtype_than_the_weights_is_400(server: ServerProcess, datatype: str):
    """torch 2.x words a Linear's dtype mismatch as `mat1 and mat2 must have the same dtype`:
    the client's mistake, as V2 gives the datatype explicitly."""
    data = [True] * 4 if datatype == "BOOL" else [1, 2, 3, 4]
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 4], "data": data}]}
    response = server.post("/v2/models/classifier/infer", json=body)
    assert response.status_code == 400, response.text
    assert "must have the same dtype" in response.json()["error"]


def test_a_scalar_for_a_linear_layer_is_400(server: ServerProcess):
    """torch words a rank too low as `need to be at least 1D`: the input's fault, not a 500."""
    scalar = {"name": "x", "datatype": "FP32", "shape": [], "data": [1.0]}
    response = server.post("/v2/models/classifier/infer", json={"inputs": [scalar]})
    assert response.status_code == 400, response.text
    assert "at least 1D" in response.json()["error"]


def test_indices_the_model_cannot_use_are_400(server: ServerProcess):
    x = {"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}
    beyond = {"name": "i", "datatype": "INT64", "shape": [1], "data": [7]}
    response = server.post("/v2/models/indexer/infer", json={"inputs": [x, beyond]})
    assert response.status_code == 400, response.text
    assert "index 7 is out of bounds for dimension 0" in response.json()["error"]
    decimal = {"name": "i", "datatype": "FP32", "shape": [1], "data": [0.5]}
    response = server.post("/v2/models/indexer/infer", json={"inputs": [x, decimal]})
    assert response.status_code == 400, response.text
    assert "tensors used as indices must be" in response.json()["error"]
    token = {"name": "ids", "datatype": "INT64", "shape": [1], "data": [12]}
    response = server.post("/v2/models/embedder/infer", json={"inputs": [token]})
    assert response.status_code == 400, response.text
    assert "index out of range" in response.json()["error"]
    fine = {"name": "i", "datatype": "INT64", "shape": [1], "data": [2]}
    response = server.post("/v2/models/indexer/infer", json={"inputs": [x, fine]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [3.0]


def test_v1_integer_rows_take_the_floating_dtype_of_the_weights(server: ServerProcess, models):
    """JSON does not tell 1 from 1.0: V1 integers feed a float TorchScript model like
    decimals do, while a model with an embedding still gets its integer ids."""
    ints = server.post("/v1/models/classifier:predict", json={"instances": [[1, 2, 3, 4]]})
    decimals = server.post("/v1/models/classifier:predict", json={"instances": [[1.0, 2, 3, 4]]})
    assert ints.status_code == 200, ints.text
    assert ints.json() == decimals.json()
    logits, _ = eager(models["classifier"], np.array([[1, 2, 3, 4]], dtype=np.float32))
    predicted = [row["output-0"] for row in ints.json()["predictions"]]
    np.testing.assert_allclose(predicted, logits.numpy(), rtol=1e-5)
    ids = server.post("/v1/models/embedder:predict", json={"instances": [[1, 2]]})
    assert ids.status_code == 200, ids.text
    expected = eager(models["embedder"], np.array([[1, 2]])).numpy()
    np.testing.assert_allclose(ids.json()["predictions"], expected, rtol=1e-6)
