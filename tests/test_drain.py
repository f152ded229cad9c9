"""Draining after SIGTERM, seen by a keep-alive client: every request that arrives before the
drain ends is answered, and answers tell the client to close its connection."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.echo import echo_model
from tests.servers import wait_for

V2_BODY = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [3]}]}


def test_keep_alive_clients_are_answered_and_told_to_close_while_draining(serve, tmp_path):
    echo_model(tmp_path / "echo")
    server = serve("sklearn", tmp_path, "--graceful_shutdown_timeout=20")
    started = tmp_path / "started"
    slow_body = {**V2_BODY, "parameters": {"sleep": 2.0, "started_file": str(started)}}
    slow: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            slow["answer"] = client.post("/v2/models/echo/infer", json=slow_body)

    caller = threading.Thread(target=slow_request)
    caller.start()
    wait_for(started.exists)  # the slow request is inside predict: the drain must wait for it
    with httpx.Client(base_url=server.url, timeout=10) as keep_alive:
        before = keep_alive.post("/v2/models/echo/infer", json=V2_BODY)
        assert before.status_code == 200
        assert "connection" not in before.headers  # kept alive while serving normally
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: keep_alive.get("/v2/health/ready").status_code == 503)
        during = [keep_alive.post("/v2/models/echo/infer", json=V2_BODY) for _ in range(5)]
    assert [response.status_code for response in during] == [200] * 5
    assert all(response.headers["connection"] == "close" for response in during)
    assert all(response.json()["outputs"][0]["data"] == [3] for response in during)
    caller.join(30)
    assert slow["answer"].status_code == 200
    assert server.process.wait(30) == 0


def test_drain_ends_within_the_grace_even_if_a_request_does_not(serve, tmp_path):
    echo_model(tmp_path / "echo")
    server = serve("sklearn", tmp_path, "--graceful_shutdown_timeout=1", "--enable_grpc=false")
    started = tmp_path / "started"
    hung_body = {**V2_BODY, "parameters": {"sleep": 30.0, "started_file": str(started)}}
    answer: dict[str, object] = {}

    def hung_request() -> None:
        try:
            answer["status"] = httpx.post(
                f"{server.url}/v2/models/echo/infer", json=hung_body, timeout=60
            ).status_code
        except httpx.HTTPError as exc:
            answer["status"] = type(exc).__name__

    caller = threading.Thread(target=hung_request, daemon=True)
    caller.start()
    wait_for(started.exists)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    # The grace (1 s) plus uvicorn's ticks: neither forever (a 0 grace) nor twice the grace.
    assert time.monotonic() - signalled < 2.0
    caller.join(10)
    assert answer["status"] != 200
