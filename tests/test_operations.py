"""Production behaviour: metrics, logs, graceful shutdown, several workers, limits."""

from __future__ import annotations

import asyncio
import json
import signal
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.base.logs import AccessLog
from tests.models import IRIS_ROWS, constant_model, iris_logistic
from tests.servers import wait_for

V2_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROWS[0]}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition text: (sample name, sorted labels) -> value."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def test_metrics_count_what_was_sent(serve, tmp_path):
    iris_logistic(tmp_path / "iris")
    constant_model(tmp_path / "sevens", 7)
    server = serve("sklearn", tmp_path)
    for _ in range(5):
        assert server.post("/v2/models/iris/infer", json=V2_BODY).status_code == 200
    for _ in range(3):
        assert (
            server.post("/v1/models/sevens:predict", json={"instances": IRIS_ROWS}).status_code
            == 200
        )
    assert server.post("/v2/models/iris/infer", json={"inputs": []}).status_code == 400
    parsed = samples(server.get("/metrics").text)

    def requests(model, protocol, endpoint, status):
        labels = (
            ("endpoint", endpoint),
            ("model", model),
            ("protocol", protocol),
            ("status", status),
        )
        return parsed.get(("modelport_requests_total", labels), 0)

    assert requests("iris", "v2", "infer", "200") == 5
    assert requests("iris", "v2", "infer", "400") == 1
    assert requests("sevens", "v1", "predict", "200") == 3
    assert parsed[("request_predict_seconds_count", (("model_name", "iris"),))] == 5
    assert parsed[("request_predict_seconds_count", (("model_name", "sevens"),))] == 3
    assert parsed[("request_preprocess_seconds_count", (("model_name", "iris"),))] >= 5
    assert parsed[("request_postprocess_seconds_count", (("model_name", "sevens"),))] == 3
    assert parsed[("modelport_loaded_models", ())] == 2
    assert any(name == "process_resident_memory_bytes" for name, _ in parsed)
    latency = parsed[
        (
            "modelport_request_duration_seconds_count",
            (("endpoint", "infer"), ("model", "iris"), ("protocol", "v2"), ("status", "200")),
        )
    ]
    assert latency == 5


def test_access_log_is_json_with_request_id(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris")
    response = server.post(
        "/v1/models/iris:predict",
        json={"instances": IRIS_ROWS},
        headers={"x-request-id": "trace-42"},
    )
    assert response.headers["x-request-id"] == "trace-42"
    server.post("/v1/models/iris:predict", json={"instances": [[1, 2]]})  # a 400
    wait_for(lambda: server.log().count('"logger":"modelport.access"') >= 2)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "modelport.access"]
    mine = [line for line in access if line["request_id"] == "trace-42"]
    assert len(mine) == 1
    assert mine[0]["status"] == 200 and mine[0]["model"] == "iris"
    assert mine[0]["path"] == "/v1/models/iris:predict" and mine[0]["duration_ms"] > 0
    assert any(line["status"] == 400 for line in access)
    assert "Traceback" not in server.log()
    assert all(line["level"] != "warning" for line in lines)


def test_access_log_can_be_turned_off(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve(
        "sklearn", tmp_path, "--model_name=iris", "--access_log=false", "--log_level=warning"
    )
    assert server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS}).status_code == 200
    # Something logged after the request shows the log has caught up with it.
    assert server.post("/v1/models/iris:predict", json={"instances": [[1]]}).status_code == 400
    assert "modelport.access" not in server.log()


def test_sigterm_drains_in_flight_request_then_exits_zero(serve, tmp_path):
    started = tmp_path / "started"
    constant_model(tmp_path / "slow", 7, delay=2.0, started_file=started)
    server = serve(
        "sklearn", tmp_path / "slow", "--model_name=slow", "--graceful_shutdown_timeout=20"
    )
    result: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            result["slow"] = client.post("/v1/models/slow:predict", json={"instances": IRIS_ROWS})

    caller = threading.Thread(target=slow_request)
    caller.start()
    wait_for(started.exists)  # the request is now inside predict
    server.process.send_signal(signal.SIGTERM)
    with httpx.Client(base_url=server.url, timeout=5) as probe:
        wait_for(lambda: probe.get("/v2/health/ready").status_code == 503, timeout=5)
        assert probe.get("/v2/health/live").status_code == 200  # liveness stays
    caller.join()
    assert result["slow"].status_code == 200
    assert result["slow"].json() == {"predictions": [7, 7]}
    assert server.process.wait(timeout=20) == 0


def test_two_workers_serve_and_share_metrics(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris", "--workers=2")
    # Readiness needs one worker; this test needs both.
    wait_for(lambda: server.log().count("Application startup complete") >= 2, timeout=60)
    pids = set()
    for _ in range(20):
        with httpx.Client(base_url=server.url, timeout=30) as client:  # new connection each time
            response = client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
            assert response.json() == {"predictions": [1, 1]}
    for line in server.log().splitlines():
        if '"Started server process' in line:
            pids.add(json.loads(line)["msg"])
    assert len(pids) == 2
    parsed = samples(server.get("/metrics").text)
    labels = (("endpoint", "predict"), ("model", "iris"), ("protocol", "v1"), ("status", "200"))
    assert parsed[("modelport_requests_total", labels)] == 20
    assert parsed[("modelport_loaded_models", ())] == 2  # one per worker
    assert server.stop() == 0


def test_worker_failing_to_load_stops_the_server(tmp_path):
    import subprocess
    import sys

    (tmp_path / "model.joblib").write_bytes(b"corrupt")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelport.runtimes.sklearn",
            f"--model_dir={tmp_path}",
            "--workers=2",
            "--http_port=0",
            "--grpc_port=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "model.joblib" in result.stderr


@pytest.mark.parametrize(
    ("flags", "body", "status", "words"),
    [
        (
            ["--max_inputs=2"],
            {"inputs": [{**V2_BODY["inputs"][0], "name": f"x{i}"} for i in range(3)]},
            400,
            "too many inputs",
        ),
        (
            ["--max_tensor_elements=8"],
            {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": [0] * 12}]},
            400,
            "more than 8 elements",
        ),
        (
            ["--max_request_size=100"],
            {"inputs": [{"name": "x", "shape": [1, 40], "datatype": "FP32", "data": [0] * 40}]},
            413,
            "exceeds",
        ),
    ],
)
def test_limits(serve, tmp_path, flags, body, status, words):
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris", *flags)
    response = server.post("/v2/models/iris/infer", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert server.post("/v2/models/iris/infer", json=V2_BODY).status_code == 200


async def test_access_lines_of_a_burst_leave_in_one_write(capsys):
    """On an event loop the access lines of a burst are gathered and written together
    (one write, not one system call per request), soon after, and at exit at the latest."""
    access = AccessLog()
    for index in range(3):
        access.write({"path": f"/r{index}", "status": 200})
    assert capsys.readouterr().err == ""  # gathered, not yet written
    await asyncio.sleep(AccessLog.FLUSH_AFTER * 3)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["path"] for line in lines] == ["/r0", "/r1", "/r2"]
    assert {line["logger"] for line in lines} == {"modelport.access"}
    access.write({"path": "/last", "status": 200})
    access.flush()  # what exit does
    assert json.loads(capsys.readouterr().err)["path"] == "/last"
