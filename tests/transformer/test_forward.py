"""The forwarding client against a real sklearn predictor process (and a recording stand-in
where the test must see what was sent): protocols, binary tensors, errors, retries."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from modelport.base import forward
from modelport.base.forward import (
    PredictorClient,
    PredictorNotReady,
    PredictorRejected,
    PredictorTimeout,
    PredictorUnavailable,
)
from modelport.base.messages import InferRequest, RequestedOutput, Tensor
from modelport.base.protocol import v2_client
from tests.models import IRIS_ROWS, constant_model, iris_logistic
from tests.servers import free_port, start_server
from tests.transformer.fake import Closing, fake_predictor, http_answer, raw_predictor


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    server = start_server(
        "sklearn", iris_logistic(tmp_path_factory.mktemp("iris")), "--model_name=iris"
    )
    yield server
    server.stop()


def run(client: PredictorClient, call: str, *args: Any, **kwargs: Any) -> Any:
    """One client call on a fresh event loop, closing the pool afterwards."""

    async def go() -> Any:
        try:
            return await getattr(client, call)(*args, **kwargs)
        finally:
            await client.aclose()

    return asyncio.run(go())


def iris_request(rows: Any) -> InferRequest:
    return InferRequest(inputs=[Tensor("input-0", np.asarray(rows, dtype=np.float64))])


def test_v2_infer_small_tensor_as_json(iris):
    client = PredictorClient(f"127.0.0.1:{iris.port}", "v2")
    response = run(client, "infer", "iris", iris_request(IRIS_ROWS))
    assert response.outputs[0].data.tolist() == [1, 1]
    assert "binary_data_size" not in response.outputs[0].parameters


def test_v2_infer_large_tensor_goes_binary_and_matches(iris):
    from sklearn.datasets import load_iris

    rows, labels = load_iris(return_X_y=True)
    request = iris_request(rows)
    body, json_length = v2_client.encode_request(request)
    assert json_length is not None and len(body) - json_length == rows.nbytes
    client = PredictorClient(f"127.0.0.1:{iris.port}", "v2")
    response = run(client, "infer", "iris", request)
    predicted = response.outputs[0].data
    assert predicted.shape == (150,)
    assert (predicted == labels).mean() > 0.9


def test_v2_requested_outputs_pass_through(iris):
    request = iris_request(IRIS_ROWS)
    request.outputs = [RequestedOutput("predict_proba")]
    response = run(PredictorClient(f"127.0.0.1:{iris.port}", "v2"), "infer", "iris", request)
    assert response.outputs[0].name == "predict_proba"
    np.testing.assert_allclose(response.outputs[0].data.sum(axis=1), 1.0)


def test_v1_predict(iris):
    client = PredictorClient(f"127.0.0.1:{iris.port}", "v1")
    assert run(client, "predict_v1", "iris", {"instances": IRIS_ROWS}) == {"predictions": [1, 1]}


def test_unknown_model_stays_404_naming_the_predictor(iris):
    client = PredictorClient(f"127.0.0.1:{iris.port}", "v2")
    with pytest.raises(PredictorRejected) as caught:
        run(client, "infer", "nope", iris_request(IRIS_ROWS))
    assert caught.value.status == 404
    assert f"127.0.0.1:{iris.port}" in caught.value.message
    assert "model 'nope' not found" in caught.value.message


def test_bad_request_stays_400_with_the_predictors_message(iris):
    client = PredictorClient(f"127.0.0.1:{iris.port}", "v1")
    with pytest.raises(PredictorRejected) as caught:
        run(client, "predict_v1", "iris", {"instances": "not rows"})
    assert caught.value.status == 400
    assert "'instances' must be a non-empty list" in caught.value.message


def test_predictor_down_is_502():
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(PredictorUnavailable) as caught:
        run(PredictorClient(host, "v2"), "infer", "iris", iris_request(IRIS_ROWS))
    assert caught.value.status == 502
    assert f"predictor {host} is unreachable" in caught.value.message
    assert run(PredictorClient(host, "v2"), "is_ready", "iris") is False


def test_slow_predictor_is_504(tmp_path):
    slow = start_server(
        "sklearn", constant_model(tmp_path / "slow", 7, delay=3.0), "--model_name=slow"
    )
    try:
        client = PredictorClient(f"127.0.0.1:{slow.port}", "v1", timeout=0.5)
        with pytest.raises(PredictorTimeout) as caught:
            run(client, "predict_v1", "slow", {"instances": IRIS_ROWS})
        assert caught.value.status == 504
        assert "timed out after 0.5s" in caught.value.message
    finally:
        slow.stop()


def test_is_ready_v1_and_v2(iris):
    host = f"127.0.0.1:{iris.port}"
    assert run(PredictorClient(host, "v1"), "is_ready", "iris") is True
    assert run(PredictorClient(host, "v2"), "is_ready", "iris") is True
    assert run(PredictorClient(host, "v2"), "is_ready", "nope") is False


def test_retries_on_503_then_succeeds():
    with fake_predictor([503, 503]) as fake:
        client = PredictorClient(fake.host, "v1", retries=2)
        assert run(client, "predict_v1", "m", {"instances": [[1]]}) == {"predictions": [1]}
        assert len(fake.seen) == 3


def test_503_without_retries_is_503_and_sent_once():
    with fake_predictor([503, 503]) as fake:
        with pytest.raises(PredictorNotReady) as caught:
            run(PredictorClient(fake.host, "v1"), "predict_v1", "m", {"instances": [[1]]})
        assert caught.value.status == 503
        assert "answered 503: scripted 503" in caught.value.message
        assert len(fake.seen) == 1


def test_500_is_not_retried_and_becomes_502():
    with fake_predictor([500]) as fake:
        client = PredictorClient(fake.host, "v1", retries=3)
        with pytest.raises(PredictorUnavailable) as caught:
            run(client, "predict_v1", "m", {"instances": [[1]]})
        assert "answered 500: scripted 500" in caught.value.message
        assert len(fake.seen) == 1


def test_only_tracing_identity_and_auth_headers_are_forwarded():
    incoming = {
        "X-Request-Id": "rid-1",
        "x-b3-traceid": "t",
        "x-b3-spanid": "s",
        "x-b3-parentspanid": "p",
        "x-b3-sampled": "1",
        "x-b3-flags": "0",
        "b3": "t-s-1",
        "traceparent": "00-abc-def-01",
        "tracestate": "k=v",
        "authorization": "Bearer x",
        "cookie": "secret=1",
        "x-other": "no",
    }
    with fake_predictor() as fake:
        run(PredictorClient(fake.host, "v2"), "infer", "m", iris_request(IRIS_ROWS), incoming)
        sent = fake.seen[0].headers
    assert sent["x-request-id"] == "rid-1"
    for name in ("x-b3-traceid", "b3", "traceparent", "tracestate", "authorization"):
        assert sent[name] == incoming[name]
    assert "cookie" not in sent and "x-other" not in sent


V1_OK = http_answer(200, {"predictions": [1]})


def calls(client: PredictorClient, count: int, pause: float = 0.0) -> list[Any]:
    """`count` V1 calls in a row on one event loop (one pool), each outcome or its error."""

    async def go() -> list[Any]:
        outcomes: list[Any] = []
        try:
            for index in range(count):
                if index and pause:
                    await asyncio.sleep(pause)
                try:
                    outcomes.append(await client.predict_v1("m", {"instances": [[1]]}))
                except forward.PredictorError as exc:
                    outcomes.append(exc)
        finally:
            await client.aclose()
        return outcomes

    return asyncio.run(go())


def test_a_kept_alive_connection_the_predictor_closed_is_resent_once():
    # The predictor's idle close races the next request: each connection answers once and
    # is closed, unanswered, under the request that reuses it. No retries configured.
    with raw_predictor(lambda conn, index, head: V1_OK if index == 0 else None) as fake:
        outcomes = calls(PredictorClient(fake.host, "v1"), 3)
    assert outcomes == [{"predictions": [1]}] * 3
    # The 2nd and 3rd each went out twice: on the dead connection, then on a new one.
    assert (fake.requests, fake.connections) == (5, 3)


def test_a_new_connection_closed_without_an_answer_is_not_resent():
    # A predictor that drops a request on a connection made for it may have run it (and
    # crashed): that is a 502, sent once, whatever the retries.
    with raw_predictor(lambda conn, index, head: None) as fake:
        (outcome,) = calls(PredictorClient(fake.host, "v1", retries=3), 1)
    assert isinstance(outcome, PredictorUnavailable) and outcome.status == 502
    assert "ServerDisconnectedError" in outcome.message
    assert fake.requests == 1


def test_a_reused_connection_cut_after_the_answer_began_is_not_resent():
    # The predictor had started answering: it ran the request, which must not run twice.
    def script(conn: int, index: int, head: bytes) -> bytes:
        if index == 0:
            return V1_OK
        return Closing(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"predi')

    with raw_predictor(script) as fake:
        first, second = calls(PredictorClient(fake.host, "v1", retries=3), 2)
    assert first == {"predictions": [1]}
    assert isinstance(second, PredictorUnavailable) and "ClientPayloadError" in second.message
    assert fake.requests == 2


def test_idle_connections_are_dropped_before_the_predictors_idle_close(monkeypatch):
    import uvicorn

    # Below uvicorn's keep-alive timeout, which closes a predictor's idle connections.
    assert uvicorn.Config(app=None).timeout_keep_alive > forward.KEEPALIVE_S
    monkeypatch.setattr(forward, "KEEPALIVE_S", 0.2)
    with raw_predictor(lambda conn, index, head: V1_OK) as fake:
        outcomes = calls(PredictorClient(fake.host, "v1"), 3, pause=0.6)
    assert outcomes == [{"predictions": [1]}] * 3
    assert (fake.requests, fake.connections) == (3, 3)


V2_OUTPUT = {"name": "o", "datatype": "INT64", "shape": [1], "data": [1]}


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ({"outputs": [{**V2_OUTPUT, "parameters": 5}]}, "output 'o' 'parameters' must be an"),
        ({"outputs": [{**V2_OUTPUT, "parameters": "ab"}]}, "must be an object, got str"),
        ({"outputs": [{**V2_OUTPUT, "parameters": [["a", 1]]}]}, "must be an object, got list"),
        ({"outputs": [V2_OUTPUT], "parameters": 5}, "response 'parameters' must be an object"),
        ({"outputs": [V2_OUTPUT], "id": {"a": 1}}, "response 'id' must be a string"),
        (
            {"outputs": [{**V2_OUTPUT, "parameters": {"binary_data_size": True}}]},
            "binary_data_size True overruns",
        ),
        ({"outputs": {"o": 1}}, "no 'outputs' list"),
        ([1, 2], "no 'outputs' list"),
    ],
)
def test_a_malformed_v2_answer_is_the_predictors_502(answer, complaint):
    with (
        raw_predictor(lambda conn, index, head: http_answer(200, answer)) as fake,
        pytest.raises(PredictorUnavailable) as caught,
    ):
        run(PredictorClient(fake.host, "v2"), "infer", "m", iris_request(IRIS_ROWS))
    assert caught.value.status == 502
    assert f"predictor {fake.host} sent an invalid V2 response" in caught.value.message
    assert complaint in caught.value.message


def chunked_answer(payload: bytes) -> bytes:
    """A 200 with a chunked body (no Content-Length to refuse it by)."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 4096]), payload[i : i + 4096])
        for i in range(0, len(payload), 4096)
    )
    return head + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_answer_over_the_size_limit_is_the_predictors_502(framing):
    # A broken or hostile predictor must not grow the component without bound: the answer
    # is refused as it arrives, over --max_request_size, and the component keeps working.
    big = b'{"predictions": [' + b"1," * 40_000 + b"1]}"
    answer = http_answer(200, big) if framing == "content-length" else chunked_answer(big)
    script = lambda conn, index, head: answer if (conn, index) == (0, 0) else V1_OK  # noqa: E731
    with raw_predictor(script) as fake:
        first, second = calls(PredictorClient(fake.host, "v1", max_answer_size=50_000), 2)
    assert isinstance(first, PredictorUnavailable) and first.status == 502
    size = "80020 bytes" if framing == "content-length" else "more than 50000 bytes"
    assert first.message == (
        f"predictor {fake.host} sent an answer of {size}, over the limit of 50000 bytes "
        "(--max_request_size)"
    )
    assert second == {"predictions": [1]}
    # Under the limit, the same answer passes.
    with raw_predictor(lambda conn, index, head: answer) as fake:
        (outcome,) = calls(PredictorClient(fake.host, "v1", max_answer_size=len(big)), 1)
    assert isinstance(outcome, dict) and len(outcome["predictions"]) == 40_001


def test_a_predictors_redirect_is_not_followed():
    # Followed, the request and its credentials would go where the predictor points.
    redirect = http_answer(307, b"", b"location: http://127.0.0.1:1/elsewhere\r\n")
    with raw_predictor(lambda conn, index, head: redirect) as fake:
        (outcome,) = calls(PredictorClient(fake.host, "v1", retries=2), 1)
        assert run(PredictorClient(fake.host, "v1"), "is_ready", "m") is False
    assert isinstance(outcome, PredictorUnavailable) and outcome.status == 502
    assert outcome.message.startswith(f"predictor {fake.host} answered 307")
    assert fake.requests == 2


def grpc_checks(*args: str) -> None:
    """The grpc-v2 checks run in a child process: modelport's generated OIP protos and
    tritonclient.grpc's (used by other tests in this session) both register the `inference`
    protobuf package, so they cannot share one process."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.transformer.grpc_client_checks", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_grpc_v2_infer_is_ready_and_errors(iris):
    grpc_checks("served", f"127.0.0.1:{iris.grpc_port}")


def test_grpc_v2_predictor_down_is_502_after_retries():
    grpc_checks("down", f"127.0.0.1:{free_port()}")
