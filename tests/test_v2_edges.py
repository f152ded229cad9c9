"""Open Inference Protocol edge cases a hostile or careless client can send, against a real
server (REST through httpx, gRPC through tritonclient's generated stubs): each is a 4xx or
INVALID_ARGUMENT naming the problem, never a 500, and the server keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.echo import echo_model
from tests.servers import ServerProcess, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("v2-edges")
    echo_model(root / "echo")
    process = start_server("sklearn", root)
    yield process
    process.stop()


def nested(value: Any, depth: int) -> Any:
    """`value` wrapped in `depth` lists: a tensor of rank `depth` holding one element."""
    for _ in range(depth):
        value = [value]
    return value


def infer(server: ServerProcess, *inputs: dict[str, Any], **doc: Any) -> Any:
    return server.post("/v2/models/echo/infer", json={"inputs": list(inputs), **doc})


def still_serves(server: ServerProcess) -> None:
    good = infer(server, {"name": "x", "datatype": "INT32", "shape": [1], "data": [7]})
    assert good.status_code == 200, good.text
    assert good.json()["outputs"][0]["data"] == [7]


# numpy iterates (`.flat`) at most 32 dimensions; the OIP allows 64.
RANK = 40


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("BYTES", nested(1, RANK), ["input 'x'", "BYTES data must be strings"]),
        ("INT32", nested(1.5, RANK), ["input 'x'", "non-integer"]),
    ],
    ids=["bytes-not-text", "int-not-integer"],
)
def test_wrong_json_data_of_high_rank_is_400(server, datatype, data, words):
    answer = infer(server, {"name": "x", "datatype": datatype, "shape": [1] * RANK, "data": data})
    assert answer.status_code == 400, answer.text
    for word in words:
        assert word in answer.json()["error"]
    still_serves(server)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_text_tensors_of_high_rank_round_trip(server, binary):
    tensor = {"name": "x", "datatype": "BYTES", "shape": [1] * RANK, "data": nested("a", RANK)}
    answer = infer(server, tensor, parameters={"binary_data_output": binary})
    assert answer.status_code == 200, answer.text
    if binary:
        length = int(answer.headers["inference-header-content-length"])
        assert answer.content[length:] == b"\x01\x00\x00\x00a"
    else:
        output = answer.json()["outputs"][0]
        assert (output["shape"], output["data"]) == ([1] * RANK, ["a"])
    still_serves(server)


@pytest.fixture
def stub(server: ServerProcess) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


def grpc_still_serves(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="INT32", shape=[1]).contents.int_contents.append(7)
    assert list(stub.ModelInfer(request).outputs[0].contents.int_contents) == [7]


@pytest.mark.parametrize("letter", ["n", "é"], ids=["ascii", "utf8"])
def test_a_long_name_in_a_grpc_error_still_reaches_the_client(stub, letter):
    """The status message travels in a trailer, which clients cap (grpc: 8 KiB, then 16 KiB
    at most): echoing a client's 20 000-character name made it RESOURCE_EXHAUSTED."""
    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name=letter * 20_000, datatype="FP32", shape=[1])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    code, details = grpc_status(lambda: stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"input '{letter * 10}") and "truncated" in details
    grpc_still_serves(stub)


def test_a_long_unknown_service_in_a_health_check_is_not_found(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="s" * 20_000)
        code, details = grpc_status(lambda: health.Check(request))
        assert code == grpc.StatusCode.NOT_FOUND, details
        assert "truncated" in details
        assert health.Check(health_pb2.HealthCheckRequest()).status == 1  # SERVING


def binary_body(size: Any, tail: bytes, header: bool = True) -> dict[str, Any]:
    """httpx arguments for one FP32 [1] input in the binary extension."""
    doc = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    head = orjson.dumps(doc)
    headers = {"Inference-Header-Content-Length": str(len(head))} if header else {}
    return {"content": head + tail, "headers": headers}


@pytest.mark.parametrize(
    ("size", "tail", "words"),
    [
        ("4", b"\0\0\x80?", ["input 'x'", "binary_data_size '4'", "non-negative integer"]),
        (4.0, b"\0\0\x80?", ["input 'x'", "binary_data_size 4.0", "non-negative integer"]),
        (True, b"\0", ["input 'x'", "binary_data_size True", "non-negative integer"]),
        (-4, b"\0\0\x80?", ["input 'x'", "binary_data_size -4", "non-negative integer"]),
        (8, b"\0\0\x80?", ["input 'x'", "binary_data_size 8", "only 4 bytes"]),
    ],
    ids=["text", "float", "boolean", "negative", "overrun"],
)
def test_a_bad_binary_data_size_is_400_saying_what_is_wrong(server, size, tail, words):
    answer = server.post("/v2/models/echo/infer", **binary_body(size, tail))
    assert answer.status_code == 400, answer.text
    for word in words:
        assert word in answer.json()["error"]
    still_serves(server)


def test_binary_data_without_the_header_length_is_400_naming_the_header(server):
    """tritonclient sets Inference-Header-Content-Length; a hand-made client that forgets it
    was told its JSON is invalid (UTF-8 surrogates), not what it left out."""
    answer = server.post("/v2/models/echo/infer", **binary_body(4, b"\0\0\x80?", header=False))
    assert answer.status_code == 400, answer.text
    assert "Inference-Header-Content-Length" in answer.json()["error"]
    garbage = server.post("/v2/models/echo/infer", content=b'{"inputs": [')
    assert garbage.status_code == 400
    assert "not valid JSON" in garbage.json()["error"]
    still_serves(server)


def test_a_json_output_never_carries_a_stale_binary_data_size(server):
    """An output that copied a binary input's parameters (a pass-through model) said
    `binary_data_size` next to its JSON `data`: clients then look for bytes that are not
    there (tritonclient reads them past the end)."""
    head = orjson.dumps(
        {
            "parameters": {"echo_parameters": True},
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4, "tag": "kept"},
                }
            ],
        }
    )
    answer = server.post(
        "/v2/models/echo/infer",
        content=head + b"\0\0\x80?",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert answer.status_code == 200, answer.text
    assert "inference-header-content-length" not in answer.headers
    (output,) = answer.json()["outputs"]
    assert output["data"] == [1.0]
    assert output["parameters"] == {"tag": "kept"}


SHARED_MEMORY = {"shared_memory_region": "region", "shared_memory_byte_size": 4}


@pytest.mark.parametrize("where", ["input", "output"])
def test_shared_memory_regions_are_refused_by_name_over_rest(server, where):
    """Triton answers an unknown region with a 400; modelport has none (no shared memory
    extension). An output's region was silently ignored: the client then read its region,
    which the server never wrote."""
    tensor: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    doc: dict[str, Any] = {"inputs": [tensor]}
    if where == "input":
        tensor["parameters"] = SHARED_MEMORY
        del tensor["data"]
    else:
        doc["outputs"] = [{"name": "echo-x", "parameters": SHARED_MEMORY}]
    answer = server.post("/v2/models/echo/infer", json=doc)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert f"{where} '{'x' if where == 'input' else 'echo-x'}'" in error
    assert "shared memory" in error
    still_serves(server)


@pytest.mark.parametrize("where", ["input", "output"])
def test_shared_memory_regions_are_refused_by_name_over_grpc(stub, where):
    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1])
    target = (
        tensor.parameters if where == "input" else request.outputs.add(name="echo-x").parameters
    )
    target["shared_memory_region"].string_param = "region"
    target["shared_memory_byte_size"].int64_param = 4
    if where == "output":
        tensor.contents.fp32_contents.append(1.0)
    code, details = grpc_status(lambda: stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "shared memory" in details
    grpc_still_serves(stub)


def peak_memory(server: ServerProcess) -> int:
    """The server process' peak resident memory (bytes), from /proc."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_bytes_elements_past_the_shape_are_refused_before_they_are_built(server):
    """Each BYTES element takes 5 bytes on the wire and ~50 as a Python object in a list and
    an array: 60 MB of one-byte elements for a shape of [1] grew the server by ~600 MB, on
    the event loop, before the element count was compared with the shape."""
    tail = b"\x01\x00\x00\x00a" * 12_000_000
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(tail)},
                }
            ]
        }
    )
    before = peak_memory(server)
    answer = server.post(
        "/v2/models/echo/infer",
        content=head + tail,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert answer.status_code == 400, answer.text
    assert "input 'x': binary data holds more BYTES elements" in answer.json()["error"]
    assert peak_memory(server) - before < 3 * len(tail), "decoding built every element"
    still_serves(server)


def test_a_header_length_of_zero_means_all_json_as_in_triton(server):
    """Triton reads `Inference-Header-Content-Length: 0` as "the whole body is JSON" (no
    JSON header is empty); modelport answered 400 'not valid JSON'."""
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [7]}]}
    answer = server.post(
        "/v2/models/echo/infer",
        content=orjson.dumps(doc),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [7]


def test_json_nested_past_the_parsers_depth_is_400(server):
    """orjson refuses nesting past 1024 levels; the look for a JSON document followed by
    binary data must not then fail on it with RecursionError, a 500."""
    answer = server.post("/v2/models/echo/infer", content=b"[" * 100_000 + b"]" * 100_000)
    assert answer.status_code == 400, answer.text
    assert "not valid JSON" in answer.json()["error"]
    still_serves(server)
