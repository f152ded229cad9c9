"""Where blocking predicts run: pool threads by default, the event loop only when asked."""

from __future__ import annotations

import threading

import httpx

from tests.models import constant_model, thread_probe_model
from tests.servers import wait_for


def probe(url: str) -> list[int]:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]}
    response = httpx.post(f"{url}/v2/models/probe/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def test_predict_runs_off_the_event_loop_by_default(serve, tmp_path):
    thread_probe_model(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=probe")
    assert probe(server.url) == [0, 0]


def test_slow_predict_leaves_health_checks_answering(serve, tmp_path):
    started = tmp_path / "started"
    constant_model(tmp_path / "slow", 7, delay=2.0, started_file=started)
    server = serve("sklearn", tmp_path / "slow", "--model_name=slow")
    finished = threading.Event()

    def slow_request() -> None:
        body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
        response = httpx.post(f"{server.url}/v1/models/slow:predict", json=body, timeout=30)
        assert response.json() == {"predictions": [7]}
        finished.set()

    caller = threading.Thread(target=slow_request)
    caller.start()
    wait_for(started.exists)  # the request is now inside its predict
    try:
        # Answered while the 2 s predict is still running: the loop was never blocked.
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/slow/ready"):
            assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200
            assert not finished.is_set()
    finally:
        caller.join(timeout=30)
    assert finished.is_set()


def test_zero_predict_threads_predicts_on_the_event_loop(serve, tmp_path):
    thread_probe_model(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=probe", "--predict_threads=0")
    assert probe(server.url) == [1, 1]
    bad = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 7}]}
    response = httpx.post(f"{server.url}/v2/models/probe/infer", json=bad, timeout=30)
    assert response.status_code == 400 and "needs 8 elements" in response.json()["error"]
    assert probe(server.url) == [1, 1]  # and it keeps serving


def test_negative_predict_threads_is_refused(tmp_path):
    import subprocess
    import sys

    thread_probe_model(tmp_path)
    command = [sys.executable, "-m", "modelport.runtimes.sklearn", f"--model_dir={tmp_path}"]
    result = subprocess.run(
        [*command, "--predict_threads=-1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--predict_threads must be 0" in result.stderr
