"""Transformer and predictor as two real processes: V1 and V2 through the transformer for
each --predictor_protocol, the predictor's errors passed through, readiness, custom hooks."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.models import IRIS_ROWS, constant_model, iris_logistic
from tests.servers import ServerProcess, free_port, start_server, triton_infer
from tests.transformer.components import start_component, start_transformer
from tests.transformer.fake import fake_predictor, http_answer, raw_predictor

PROTOCOLS = ["v1", "v2", "grpc-v2"]
V2_IRIS = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": IRIS_ROWS}]}


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    server = start_server(
        "sklearn", iris_logistic(tmp_path_factory.mktemp("iris")), "--model_name=iris"
    )
    yield server
    server.stop()


def predictor_host(server: ServerProcess, protocol: str) -> str:
    """Where a transformer speaking `protocol` reaches `server`."""
    return f"127.0.0.1:{server.grpc_port if protocol == 'grpc-v2' else server.port}"


@pytest.fixture(scope="module", params=PROTOCOLS)
def through(request, iris):
    """A pass-through transformer named like the predictor's model, one per protocol."""
    server = start_transformer(
        predictor_host(iris, request.param),
        "--model_name=iris",
        f"--predictor_protocol={request.param}",
    )
    yield server
    server.stop()


def test_v1_through_the_transformer(through):
    response = through.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [1, 1]}


def test_v2_through_the_transformer(through):
    response = through.post("/v2/models/iris/infer", json={**V2_IRIS, "id": "r-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "iris" and body["id"] == "r-1"
    assert body["outputs"][0]["data"] == [1, 1]


@pytest.mark.parametrize("client", ["http", "grpc"])
def test_v2_binary_and_grpc_through_the_transformer(through, client):
    from sklearn.datasets import load_iris

    rows, labels = load_iris(return_X_y=True)
    result = triton_infer(through, "iris", [("input-0", rows, "FP64", True)], protocol=client)
    response = result.get_response()
    first = response["outputs"][0]["name"] if client == "http" else response.outputs[0].name
    assert first == "output-0"
    predicted = result.as_numpy(first)
    assert predicted.shape == (150,)
    assert (predicted == labels).mean() > 0.9


def test_transformer_serves_health_metadata_and_metrics(through):
    assert through.get("/v2/health/ready").status_code == 200
    assert through.get("/v1/models").json() == {"models": ["iris"]}
    assert through.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    through.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert 'model_name="iris"' in through.get("/metrics").text


def test_predictors_400_stays_400(through):
    response = through.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]})
    assert response.status_code == 400
    assert "error" in response.json()


def test_unknown_model_at_the_transformer_is_404(through):
    response = through.post("/v1/models/nope:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_at_the_predictor_stays_404(iris, protocol):
    host = predictor_host(iris, protocol)
    server = start_transformer(host, "--model_name=other", f"--predictor_protocol={protocol}")
    try:
        response = server.post("/v1/models/other:predict", json={"instances": IRIS_ROWS})
        assert response.status_code == 404
        error = response.json()["error"]
        assert f"predictor {host}" in error and "'other' not found" in error
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predictor_down_is_502_and_readiness_follows_it(protocol):
    host = f"127.0.0.1:{free_port()}"
    server = start_transformer(
        host,
        "--model_name=iris",
        f"--predictor_protocol={protocol}",
        "--enable_predictor_health_check",
    )
    try:
        response = server.post("/v2/models/iris/infer", json=V2_IRIS)
        assert response.status_code == 502
        assert f"predictor {host} is unreachable" in response.json()["error"]
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/models/iris/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_readiness_follows_a_ready_predictor(iris, protocol):
    server = start_transformer(
        predictor_host(iris, protocol),
        "--model_name=iris",
        f"--predictor_protocol={protocol}",
        "--enable_predictor_health_check=true",
    )
    try:
        assert server.get("/v2/health/ready").status_code == 200
        assert server.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    finally:
        server.stop()


def test_a_header_grpc_metadata_cannot_carry_is_a_400_naming_it(iris):
    """HTTP allows any Latin-1 byte in a header value, gRPC metadata only printable ASCII:
    forwarding `authorization: Bearer \xe9` to a grpc-v2 predictor was a 500 from inside
    grpc. It is the client's header: a 400 that names it, and the next request is served."""
    server = start_transformer(
        predictor_host(iris, "grpc-v2"), "--model_name=iris", "--predictor_protocol=grpc-v2"
    )
    try:
        body = {"instances": IRIS_ROWS}
        for name in ("authorization", "x-request-id"):
            response = server.post(
                "/v1/models/iris:predict", json=body, headers={name: b"Bearer \xe9"}
            )
            assert response.status_code == 400, response.text
            assert response.json() == {
                "error": f"header '{name}' holds characters other than printable ASCII, "
                "which gRPC metadata cannot carry to the predictor"
            }
        response = server.post("/v1/models/iris:predict", json=body, headers={"b3": "t-s-1"})
        assert response.json() == {"predictions": [1, 1]}
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_readiness_of_a_hung_predictor_is_not_ready_within_seconds(protocol):
    """A predictor that accepts the readiness check and never answers must not hold the
    transformer's probe for the whole request timeout (600 s): the probe answered nothing
    for that long, and shutdown waited on it. gRPC already gave up after 5 s."""
    hang = threading.Event()

    def script(conn: int, index: int, head: bytes) -> bytes | None:
        hang.wait(60)
        return None

    with raw_predictor(script) as fake:
        server = start_transformer(
            fake.host,
            "--model_name=m",
            f"--predictor_protocol={protocol}",
            "--enable_predictor_health_check",
            wait_path="/v2/health/live",
        )
        try:
            started = time.monotonic()
            response = server.get("/v2/health/ready", timeout=20)
            assert response.status_code == 503
            assert time.monotonic() - started < 10
            assert server.stop() == 0
        finally:
            hang.set()
            server.stop()


@pytest.mark.parametrize("protocol", ["v1", "grpc-v2"])
def test_slow_predictor_is_504(tmp_path, protocol):
    slow = start_server("sklearn", constant_model(tmp_path / "m", 7, delay=3.0), "--model_name=m")
    server = start_transformer(
        predictor_host(slow, protocol),
        "--model_name=m",
        f"--predictor_protocol={protocol}",
        "--predictor_request_timeout_seconds=0.5",
    )
    try:
        response = server.post("/v1/models/m:predict", json={"instances": IRIS_ROWS})
        assert response.status_code == 504
        assert "timed out after 0.5s" in response.json()["error"]
    finally:
        server.stop()
        slow.stop()


def test_custom_hooks_async_preprocess_and_headers(iris):
    server = start_component(
        "tests.transformer.iris_names",
        f"--predictor_host=127.0.0.1:{iris.port}",
        "--model_name=iris",
    )
    try:
        names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
        rows = [dict(zip(names, row, strict=True)) for row in IRIS_ROWS]
        response = server.post(
            "/v1/models/iris:predict", json={"instances": rows}, headers={"x-request-id": "abc"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "predictions": ["versicolor", "versicolor"],
            "request_id": "abc",
        }
        # A V2 request reaches the V1 predictor as instances; the V1 answer postprocess
        # returns becomes output-0 for the V2 client.
        v2 = server.post("/v2/models/iris/infer", json=V2_IRIS).json()
        assert v2["outputs"][0]["datatype"] == "BYTES"
        assert v2["outputs"][0]["data"] == ["versicolor", "versicolor"]
    finally:
        server.stop()


TRACE_HEADERS = {
    "x-request-id": "rid-42",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "1",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
    "authorization": "Bearer token",
}


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_headers_reach_the_predictor(protocol):
    with fake_predictor() as fake:
        server = start_transformer(fake.host, "--model_name=m", f"--predictor_protocol={protocol}")
        try:
            headers = {**TRACE_HEADERS, "cookie": "session=1", "x-custom": "no"}
            response = server.post(
                "/v1/models/m:predict", json={"instances": [[1]]}, headers=headers
            )
            assert response.status_code == 200, response.text
        finally:
            server.stop()
        sent = fake.seen[-1]
    assert sent.path == ("/v1/models/m:predict" if protocol == "v1" else "/v2/models/m/infer")
    for name, value in TRACE_HEADERS.items():
        assert sent.headers.get(name) == value, name
    assert "cookie" not in sent.headers and "x-custom" not in sent.headers


def test_predictor_503_stays_503_and_retries_recover():
    with fake_predictor([503, 503, 503]) as fake:
        plain = start_transformer(fake.host, "--model_name=m")
        retrying = start_transformer(fake.host, "--model_name=m", "--predictor_request_retries=2")
        try:
            body = {"instances": [[1]]}
            refused = plain.post("/v1/models/m:predict", json=body)
            assert refused.status_code == 503
            assert refused.json() == {"error": f"predictor {fake.host} answered 503: scripted 503"}
            assert len(fake.seen) == 1
            recovered = retrying.post("/v1/models/m:predict", json=body)
            assert recovered.status_code == 200, recovered.text
            assert recovered.json() == {"predictions": [1]}
            assert len(fake.seen) == 4  # two 503s, then the answer
        finally:
            plain.stop()
            retrying.stop()


def test_grpc_metadata_reaches_an_http_predictor_as_headers():
    with fake_predictor() as fake:
        server = start_transformer(fake.host, "--model_name=m", "--predictor_protocol=v2")
        try:
            result = triton_infer(
                server,
                "m",
                [("input-0", np.array([[1.0]]), "FP64", False)],
                protocol="grpc",
                headers=dict(TRACE_HEADERS),
            )
            assert result.as_numpy("output-0").tolist() == [1]
        finally:
            server.stop()
        sent = fake.seen[-1].headers
    for name in ("traceparent", "tracestate", "x-b3-traceid", "authorization", "x-request-id"):
        assert sent.get(name) == TRACE_HEADERS[name], name


def test_batching_never_merges_requests_with_other_credentials_or_ids():
    """With --max_batch_size the transformer merges V2 requests into one forwarded request,
    which carries the first one's headers: two clients' rows must never travel under one
    client's Authorization and request id, while requests alike in them still merge."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}

    def send(url: str, headers: dict[str, str]) -> int:
        return httpx.post(f"{url}/v2/models/m/infer", json=body, headers=headers).status_code

    def concurrently(url: str, *headers: dict[str, str]) -> None:
        with ThreadPoolExecutor(len(headers)) as pool:
            assert list(pool.map(lambda h: send(url, h), headers)) == [200] * len(headers)

    def shape(seen) -> list[int]:
        return json.loads(seen.body)["inputs"][0]["shape"]

    with fake_predictor() as fake:
        # A batch runs once two requests are in, or a second after the first arrived.
        server = start_transformer(
            fake.host,
            "--model_name=m",
            "--predictor_protocol=v2",
            "--max_batch_size=2",
            "--max_batch_time=1.0",
        )
        try:
            concurrently(
                server.url,
                {"authorization": "Bearer alice", "x-request-id": "id-alice"},
                {"authorization": "Bearer mallory", "x-request-id": "id-mallory"},
            )
            apart = list(fake.seen)
            fake.seen.clear()
            concurrently(
                server.url, {"authorization": "Bearer bob"}, {"authorization": "Bearer bob"}
            )
            alike = list(fake.seen)
        finally:
            server.stop()
    assert [shape(seen) for seen in apart] == [[1, 2], [1, 2]]
    assert sorted((s.headers["authorization"], s.headers["x-request-id"]) for s in apart) == [
        ("Bearer alice", "id-alice"),
        ("Bearer mallory", "id-mallory"),
    ]
    # Merged: one request of both rows (the fake's one-row answer cannot be split back, so
    # each is then sent on its own too).
    assert shape(alike[0]) == [2, 2]
    assert all(seen.headers["authorization"] == "Bearer bob" for seen in alike)


@pytest.mark.parametrize(
    ("answer", "client", "complaint"),
    [
        ({"predictions": [[1, 2], [3]]}, "v2", "sent V1 predictions no V2 tensor can hold"),
        ({"predictions": [{"a": 1}]}, "v2", "sent V1 predictions no V2 tensor can hold"),
        ({"labels": [1]}, "v2", "sent a V1 answer without 'predictions'"),
        ([1, 2], "v2", "sent a V1 response that is not a JSON object but an array"),
        ([1, 2], "v1", "sent a V1 response that is not a JSON object but an array"),
        ("yes", "v1", "not a JSON object but a string"),
    ],
)
def test_a_v1_answer_no_client_can_receive_is_the_predictors_502(answer, client, complaint):
    """Neither the client's fault (400) nor the transformer's (500 'postprocess returned')."""
    with raw_predictor(lambda conn, index, head: http_answer(200, answer)) as fake:
        server = start_transformer(fake.host, "--model_name=m")
        try:
            if client == "v1":
                response = server.post("/v1/models/m:predict", json={"instances": [[1, 2]]})
            else:
                response = server.post("/v2/models/m/infer", json=V2_IRIS)
        finally:
            server.stop()
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error.startswith(f"predictor {fake.host} ") and complaint in error, error


def test_a_grpc_client_gets_the_code_of_the_predictors_http_rejection():
    from tritonclient.utils import InferenceServerException

    expected = {
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        409: "ABORTED",
        413: "RESOURCE_EXHAUSTED",
        429: "RESOURCE_EXHAUSTED",
        422: "INVALID_ARGUMENT",
        501: "UNIMPLEMENTED",
    }
    seen: dict[int, tuple[str, str]] = {}
    with fake_predictor() as fake:
        server = start_transformer(fake.host, "--model_name=m", "--predictor_protocol=v2")
        try:
            for status in expected:
                fake.script.append(status)
                with pytest.raises(InferenceServerException) as caught:
                    triton_infer(
                        server, "m", [("x", np.ones((1, 2)), "FP64", False)], protocol="grpc"
                    )
                seen[status] = (str(caught.value.status()), str(caught.value.message()))
        finally:
            server.stop()
    assert {status: code for status, (code, _) in seen.items()} == {
        status: f"StatusCode.{code}" for status, code in expected.items()
    }
    for status, (_, message) in seen.items():
        assert f"predictor {fake.host}: scripted {status}" in message, message


def test_v2_inputs_no_v1_request_can_hold_are_400s_naming_the_input():
    """A V2 request for a V1 predictor becomes `instances`: scalar inputs have no rows
    (several of them were a 500 TypeError), and non-UTF-8 BYTES have no JSON text (a 400
    that blamed "an output"). Both are the client's, named; nothing reaches the predictor."""
    raw = b"\x02\x00\x00\x00\xff\xfe"
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    scalars = {
        "inputs": [
            {"name": name, "shape": [], "datatype": "FP32", "data": [1.0]} for name in ("a", "b")
        ]
    }
    with fake_predictor() as fake:
        server = start_transformer(fake.host, "--model_name=m", "--predictor_protocol=v1")
        try:
            response = server.post(
                "/v2/models/m/infer",
                content=head + raw,
                headers={
                    "inference-header-content-length": str(len(head)),
                    "content-type": "application/octet-stream",
                },
            )
            assert response.status_code == 400, response.text
            assert response.json() == {
                "error": "input 'text': holds bytes that are not UTF-8 text, which a V1 "
                "(JSON) request cannot carry"
            }
            for body in (scalars, {"inputs": scalars["inputs"][:1]}):
                response = server.post("/v2/models/m/infer", json=body)
                assert response.status_code == 400, response.text
                assert response.json() == {
                    "error": "input 'a': shape [] has no rows to send as V1 'instances'"
                }
            assert fake.seen == []
            rows = {"inputs": [{**scalars["inputs"][0], "shape": [1]}]}
            assert server.post("/v2/models/m/infer", json=rows).status_code == 200
            assert json.loads(fake.seen[-1].body) == {"instances": [1.0]}
        finally:
            server.stop()
