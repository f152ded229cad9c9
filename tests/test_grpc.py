"""The Open Inference Protocol over gRPC, against real servers, through tritonclient.grpc.

tritonclient registers the `inference.*` protobuf messages in this process, so these tests
use its generated stubs (`tritonclient.grpc.service_pb2`) for raw calls; modelport's own
generated modules are only ever imported by the server processes.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.echo import echo_model
from tests.models import IRIS_ROWS, iris_logistic
from tests.servers import ServerProcess, start_server, wait_for


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc-models")
    iris_logistic(root / "iris")
    echo_model(root / "echo")
    return root


@pytest.fixture(scope="module")
def server(models):
    process = start_server("sklearn", models)
    yield process
    process.stop()


def client_for(server: ServerProcess) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture
def client(server):
    with client_for(server) as triton:
        yield triton


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def iris_input(binary_rows=IRIS_ROWS) -> tgrpc.InferInput:
    tensor = tgrpc.InferInput("input-0", [len(binary_rows), 4], "FP32")
    tensor.set_data_from_numpy(np.array(binary_rows, dtype=np.float32))
    return tensor


def typed_iris_request(**fields) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="iris", **fields)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[2, 4])
    tensor.contents.fp64_contents.extend(value for row in IRIS_ROWS for value in row)
    return request


def expect_status(call, code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details()
    for word in words:
        assert word in details
    return details


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    metadata = client.get_server_metadata()
    assert metadata.name == "modelport"
    assert "model_repository" in metadata.extensions
    model = client.get_model_metadata("iris")
    assert model.name == "iris"
    assert model.platform == "sklearn"
    assert [tensor.name for tensor in model.outputs]


def test_infer_raw_contents_answers_raw(client):
    result = client.infer("iris", [iris_input()], request_id="r-1")
    assert result.get_response().id == "r-1"
    assert result.as_numpy("output-0").tolist() == [1, 1]
    assert len(result.get_response().raw_output_contents) == 1


def test_infer_typed_contents_answers_typed(stub):
    response = stub.ModelInfer(typed_iris_request(id="typed"))
    assert response.id == "typed"
    assert response.model_name == "iris"
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert output.datatype == "INT64"
    assert list(output.shape) == [2]
    assert list(output.contents.int64_contents) == [1, 1]


def test_the_request_id_is_echoed_whatever_the_model_answers(server, stub):
    """The answer's id came from the predictor's response, which the echo runtime (and any
    batched call: merged, then split) leaves unset; REST echoes the request's id."""
    request = service_pb2.ModelInferRequest(model_name="echo", id="echo-1")
    tensor = request.inputs.add(name="x", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(1)
    assert stub.ModelInfer(request).id == "echo-1"
    body = {
        "id": "echo-1",
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}],
    }
    assert server.post("/v2/models/echo/infer", json=body).json()["id"] == "echo-1"


def test_typed_request_asking_binary_answers_raw(stub):
    request = typed_iris_request()
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request)
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [1, 1]


def test_bytes_bool_fp16_round_trip_and_requested_outputs(client):
    words = tgrpc.InferInput("words", [2], "BYTES")
    words.set_data_from_numpy(np.array([b"hello", "wörld".encode()], dtype=object))
    flags = tgrpc.InferInput("flags", [3], "BOOL")
    flags.set_data_from_numpy(np.array([True, False, True]))
    half = tgrpc.InferInput("half", [2], "FP16")
    half.set_data_from_numpy(np.array([1.5, -2.25], dtype=np.float16))
    result = client.infer("echo", [words, flags, half])
    assert result.as_numpy("echo-words").tolist() == [b"hello", "wörld".encode()]
    assert result.as_numpy("echo-flags").tolist() == [True, False, True]
    assert result.as_numpy("echo-half").tolist() == [1.5, -2.25]
    only = client.infer("echo", [words, flags], outputs=[tgrpc.InferRequestedOutput("echo-flags")])
    assert only.as_numpy("echo-flags").tolist() == [True, False, True]
    assert only.as_numpy("echo-words") is None


def test_typed_bytes_and_bool(stub):
    request = service_pb2.ModelInferRequest(model_name="echo")
    words = request.inputs.add(name="w", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"a", b"bc"])
    flags = request.inputs.add(name="f", datatype="BOOL", shape=[1, 2])
    flags.contents.bool_contents.extend([False, True])
    small = request.inputs.add(name="i", datatype="INT8", shape=[2])
    small.contents.int_contents.extend([-3, 4])
    response = stub.ModelInfer(request)
    by_name = {output.name: output for output in response.outputs}
    assert list(by_name["echo-w"].contents.bytes_contents) == [b"a", b"bc"]
    assert list(by_name["echo-f"].contents.bool_contents) == [False, True]
    assert list(by_name["echo-f"].shape) == [1, 2]
    assert list(by_name["echo-i"].contents.int_contents) == [-3, 4]


def test_fp16_answer_is_raw_even_for_a_typed_request(stub):
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="h", datatype="FP16", shape=[1])
    request.raw_input_contents.append(np.array([0.5], dtype="<f2").tobytes())
    response = stub.ModelInfer(request)
    assert np.frombuffer(response.raw_output_contents[0], "<f2").tolist() == [0.5]


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, ["nope"]),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 3),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["input-0"],
        ),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP128"),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["FP128"],
        ),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP16"),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["FP16"],
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(1, -4),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["shape"],
        ),
        (
            lambda r: r.raw_input_contents.append(b"xx"),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["input-0"],
        ),
        (
            lambda r: r.inputs[0].shape.extend([1] * 70),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["input-0"],
        ),
        (lambda r: r.ClearField("inputs"), grpc.StatusCode.INVALID_ARGUMENT, ["inputs"]),
        (lambda r: r.outputs.add(name="nope"), grpc.StatusCode.INVALID_ARGUMENT, ["nope"]),
        (
            lambda r: r.inputs.add().CopyFrom(r.inputs[0]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["input-0", "more than once"],
        ),
        (
            lambda r: r.raw_input_contents.append(np.ones(8, "<f8").tobytes()),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["input-0", "one or the other"],
        ),
        (
            lambda r: (
                r.outputs.add(name="predict_proba")
                .parameters["classification"]
                .CopyFrom(service_pb2.InferParameter(int64_param=2))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["class_count"],
        ),
        (
            lambda r: [r.outputs.add(name="predict_proba") for _ in range(2)],
            grpc.StatusCode.INVALID_ARGUMENT,
            ["output 'predict_proba' is requested more than once"],
        ),
    ],
    ids=[
        "unknown-model",
        "shape-mismatch",
        "unknown-datatype",
        "typed-fp16",
        "negative-dim",
        "raw-size",
        "rank",
        "no-inputs",
        "unknown-output",
        "duplicate-input",
        "typed-and-raw",
        "classification",
        "duplicate-output",
    ],
)
def test_bad_requests_get_status_codes_and_the_server_keeps_serving(stub, mutate, code, words):
    request = typed_iris_request()
    mutate(request)
    expect_status(lambda: stub.ModelInfer(request), code, *words)
    # The same channel still answers a good call.
    assert list(stub.ModelInfer(typed_iris_request()).outputs[0].contents.int64_contents) == [1, 1]


def test_rest_and_grpc_say_the_same_thing(server, stub):
    rest = server.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": [1] * 8}]
        },
    )
    assert rest.status_code == 400
    request = typed_iris_request()
    request.inputs[0].shape[0] = 3
    details = expect_status(lambda: stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.split(",")[0].split(":")[0] in rest.json()["error"]


def test_triton_only_rpcs_are_unimplemented_by_name(client):
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_config("iris")
    assert "StatusCode.UNIMPLEMENTED" in str(caught.value.status())
    assert "ModelConfig" in caught.value.message()


def test_model_repository(client, stub):
    index = {model.name: model.state for model in client.get_model_repository_index().models}
    assert index == {"echo": "READY", "iris": "READY"}
    client.unload_model("echo")
    assert not client.is_model_ready("echo")
    # Unloaded on purpose: NOT_FOUND saying so (as Triton), not UNAVAILABLE (a retry won't help).
    to_echo = typed_iris_request()
    to_echo.model_name = "echo"
    expect_status(
        lambda: stub.ModelInfer(to_echo),
        grpc.StatusCode.NOT_FOUND,
        "model 'echo' is unloaded",
    )
    client.load_model("echo")
    assert client.is_model_ready("echo")
    # KServe's numbering: the model name in field 1 (Triton's repository_name).
    stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(repository_name="echo"))
    assert not client.is_model_ready("echo")
    stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(repository_name="echo"))
    assert client.is_model_ready("echo")
    expect_status(
        lambda: stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="../x")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_health_service_and_reflection(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service="iris")).status == serving
        expect_status(
            lambda: health.Check(health_pb2.HealthCheckRequest(service="nope")),
            grpc.StatusCode.NOT_FOUND,
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = {s.name for s in answer.list_services_response.service}
        assert "inference.GRPCInferenceService" in services
        assert "grpc.health.v1.Health" in services


def test_grpc_requests_are_in_the_metrics(server, client):
    client.infer("iris", [iris_input()])
    text = server.get("/metrics").text
    assert 'protocol="grpc"' in text
    assert 'endpoint="infer"' in text


def test_deadline_cancels_and_the_server_keeps_serving(server, stub):
    def echo_calls(status: str) -> str:
        """The metric line counting echo's gRPC infer calls of `status`, or ''."""
        series = f'endpoint="infer",model="echo",protocol="grpc",status="{status}"}}'
        lines = server.get("/metrics").text.splitlines()
        return next((line for line in lines if series in line), "")

    answered_before = echo_calls("OK")
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.parameters["sleep"].double_param = 2.0
    tensor = request.inputs.add(name="x", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(1)
    expect_status(lambda: stub.ModelInfer(request, timeout=0.3), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert list(stub.ModelInfer(typed_iris_request()).outputs[0].contents.int64_contents) == [1, 1]
    # The metrics say what happened to the call (it used to be counted as "OK").
    wait_for(lambda: echo_calls("DEADLINE_EXCEEDED"))
    assert echo_calls("OK") == answered_before


def test_workers_serve_grpc(tmp_path):
    iris_logistic(tmp_path)
    server = start_server("sklearn", tmp_path, "--model_name=iris", "--workers=2")
    try:
        with client_for(server) as triton:
            for _ in range(8):
                # New channels spread over the workers sharing the port.
                assert triton.infer("iris", [iris_input()]).as_numpy("output-0").tolist() == [1, 1]
        for _ in range(4):
            with client_for(server) as triton:
                assert triton.is_model_ready("iris")
    finally:
        assert server.stop() == 0


def test_sigterm_drains_a_grpc_call_in_flight(tmp_path):
    echo_model(tmp_path / "echo")
    server = start_server("sklearn", tmp_path)
    started = tmp_path / "started"
    answers: list[object] = []

    def slow_call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            request = service_pb2.ModelInferRequest(model_name="echo")
            request.parameters["sleep"].double_param = 1.5
            request.parameters["started_file"].string_param = str(started)
            tensor = request.inputs.add(name="x", datatype="INT32", shape=[1])
            tensor.contents.int_contents.append(5)
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answers.append(stub.ModelInfer(request, timeout=30))

    thread = threading.Thread(target=slow_call)
    thread.start()
    wait_for(started.exists)
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert server.process.wait(30) == 0
    (answer,) = answers
    assert list(answer.outputs[0].contents.int_contents) == [5]  # type: ignore[attr-defined]


def test_sigterm_ends_health_watch_streams_instead_of_waiting_for_them(tmp_path):
    """Clients with gRPC client-side health checking keep a Watch stream open; the drain
    used to wait the whole grace for it. The stream now says NOT_SERVING and ends."""
    iris_logistic(tmp_path)
    server = start_server(
        "sklearn", tmp_path, "--model_name=iris", "--graceful_shutdown_timeout=60"
    )
    seen: list[int] = []
    opened = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="iris"), timeout=120
            )
            with contextlib.suppress(grpc.RpcError):  # the stream may end as the server stops
                for answer in stream:
                    seen.append(answer.status)
                    opened.set()

    thread = threading.Thread(target=watch)
    thread.start()
    assert opened.wait(30)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert time.monotonic() - started < 20  # not the 60 s grace
    thread.join(30)
    assert seen == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]


# Run in a child process: modelport's OIP protos and tritonclient's (imported here) both
# register the `inference` protobuf package, so they cannot share one process.
_WATCH_WAKES_ON_DRAIN = textwrap.dedent(
    """
    import asyncio, time
    from types import SimpleNamespace
    from modelport.base.dataplane import DataPlane
    from modelport.base.grpc.server import _NOT_SERVING, _SERVING, HealthService

    async def main():
        async def ready():
            return True
        plane = SimpleNamespace(draining=False, drain_started=asyncio.Event(), ready=ready)
        watch = HealthService(plane, poll_seconds=60).Watch(SimpleNamespace(service=""), None)
        assert (await anext(watch)).status == _SERVING
        asyncio.get_running_loop().call_later(0.1, DataPlane.begin_drain, plane)
        started = time.monotonic()
        assert (await asyncio.wait_for(anext(watch), 10)).status == _NOT_SERVING
        assert time.monotonic() - started < 10
        try:
            await anext(watch)
        except StopAsyncIteration:
            print("woken")
        # The drain begins while SERVING is on its way (the stream is at its `yield`): the
        # stream still says NOT_SERVING before it ends.
        plane = SimpleNamespace(draining=False, drain_started=asyncio.Event(), ready=ready)
        watch = HealthService(plane, poll_seconds=60).Watch(SimpleNamespace(service=""), None)
        assert (await anext(watch)).status == _SERVING
        plane.draining = True
        assert (await asyncio.wait_for(anext(watch), 10)).status == _NOT_SERVING
        try:
            await anext(watch)
        except StopAsyncIteration:
            print("told")

    asyncio.run(main())
    """
)


def test_health_watch_says_not_serving_as_soon_as_the_drain_starts():
    """A Watch stream polls; the drain wakes it at once, so NOT_SERVING leaves well before
    the drain stops the server, and it is sent even when the drain began while the stream
    was sending SERVING (the stream used to end without it: a flaky SIGTERM test below)."""
    result = subprocess.run(
        [sys.executable, "-c", _WATCH_WAKES_ON_DRAIN], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["woken", "told"]


def test_a_model_answering_no_outputs_is_internal_as_over_rest(server, stub):
    """REST answers 500 "the model produced no outputs"; gRPC answered an empty OK."""
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.parameters["no_outputs"].bool_param = True
    tensor = request.inputs.add(name="x", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(1)
    expect_status(lambda: stub.ModelInfer(request), grpc.StatusCode.INTERNAL, "no outputs")
    body = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}],
        "parameters": {"no_outputs": True},
    }
    answer = server.post("/v2/models/echo/infer", json=body)
    assert answer.status_code == 500
    assert "no outputs" in answer.json()["error"]


def test_an_answer_over_the_send_limit_is_counted_as_what_the_client_got(tmp_path):
    """gRPC refused to send an answer over --grpc_max_send_message_length only after the
    handler returned, so the client got RESOURCE_EXHAUSTED while the metrics and access
    log counted the call OK. Typed BYTES in, raw out: each empty string grows 2 -> 4 bytes."""
    echo_model(tmp_path / "echo")
    server = start_server("sklearn", tmp_path, "--max_request_size=1M")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelInferRequest(model_name="echo")
            request.parameters["binary_data_output"].bool_param = True
            words = request.inputs.add(name="w", datatype="BYTES", shape=[400_000])
            words.contents.bytes_contents.extend([b""] * 400_000)
            assert request.ByteSize() < 1 << 20
            expect_status(
                lambda: stub.ModelInfer(request),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the answer is",
                "--grpc_max_send_message_length",
            )
            del words.contents.bytes_contents[1:]
            words.shape[0] = 1
            assert stub.ModelInfer(request).raw_output_contents[0] == b"\0\0\0\0"
        series = 'endpoint="infer",model="echo",protocol="grpc"'
        calls = [line for line in server.get("/metrics").text.splitlines() if series in line]
        counts = [
            line for line in calls if line.startswith("modelport_request_duration_seconds_count")
        ]
        assert sorted(counts) == [
            f'modelport_request_duration_seconds_count{{{series},status="OK"}} 1.0',
            f'modelport_request_duration_seconds_count{{{series},status="RESOURCE_EXHAUSTED"}} 1.0',
        ]
    finally:
        server.stop()


_SIZE_BOUND_HOLDS = textwrap.dedent(
    """
    import numpy as np
    from modelport.base.grpc import codec
    from modelport.base.messages import InferResponse, Tensor

    cases = [
        ("INT64", -np.ones(1000, np.int64)), ("INT32", np.full(7, -(2**31), np.int32)),
        ("UINT64", np.full(3, 2**64 - 1, np.uint64)), ("FP32", np.ones((100, 3), np.float32)),
        ("FP64", np.full(5, 1e300)), ("BOOL", np.ones(10, bool)), ("FP16", np.ones(4, np.float16)),
        ("INT8", np.zeros((0, 4), np.int8)),
    ]
    for datatype, data in cases:
        response = InferResponse([Tensor("o" * 300, data, datatype)], model_name="m" * 50)
        for raw in (False, True):
            answer = codec.encode_response(response, "i" * 99, raw or datatype == "FP16")
            assert codec.size_bound(response, "i" * 99) >= answer.ByteSize(), (datatype, raw)
    text = InferResponse([Tensor("t", np.array(["a"], dtype=object), "BYTES")])
    assert codec.size_bound(text, None) is None  # only encoding can tell
    print("ok")
    """
)


def test_the_answer_size_bound_is_never_below_the_encoded_size():
    """The send-limit check skips encoding twice when this bound fits the limit."""
    result = subprocess.run(
        [sys.executable, "-c", _SIZE_BOUND_HOLDS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def test_a_grpc_port_in_use_is_a_clear_start_up_error(server, models):
    """A single server bound its gRPC port with SO_REUSEPORT, so a second one on the same
    port started silently and the kernel split the calls between them."""
    second = start_server("sklearn", models, f"--grpc_port={server.grpc_port}", wait=False)
    try:
        assert second.process.wait(60) == 1
        assert "cannot serve gRPC" in second.log()
    finally:
        second.stop()
