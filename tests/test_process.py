"""The server process under faults: dead workers, repeated signals, shared metric dirs,
and where a 5xx's traceback goes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time

import httpx
import pytest

from modelport.base.supervisor import pid_alive
from tests.faulty import crashing_model, exploding_model, marked_slow_model
from tests.models import IRIS_ROWS, iris_logistic
from tests.servers import start_server
from tests.test_operations import samples

DEADLINE = 90.0


def _until(condition, what: str, server=None, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}\n{server.log() if server else ''}")
        time.sleep(0.1)


def _log_lines(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _worker_pids(server) -> list[int]:
    return [
        int(line["msg"].split("[")[1].rstrip("]"))
        for line in _log_lines(server)
        if line["msg"].startswith("Started server process")
    ]


def _restarts(server) -> float | None:
    try:
        text = server.get("/metrics").text
    except httpx.TransportError:
        return None
    return samples(text).get(("modelport_worker_restarts_total", ()))


def test_killed_worker_is_replaced_and_the_other_keeps_serving(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris", "--workers=2")
    _until(lambda: len(_worker_pids(server)) == 2, "two workers started", server)
    _until(lambda: _restarts(server) == 0, "restart counter exported", server)
    outcomes: list[str] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            try:  # a new connection each time: the kernel hands it to a live worker
                response = httpx.post(
                    f"{server.url}/v1/models/iris:predict",
                    json={"instances": IRIS_ROWS},
                    headers={"connection": "close"},
                    timeout=30,
                )
                outcomes.append("ok" if response.json() == {"predictions": [1, 1]} else "bad")
            except httpx.TransportError:
                outcomes.append("lost")

    callers = [threading.Thread(target=traffic) for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        _until(lambda: outcomes.count("ok") >= 10, "traffic flowing", server)
        victim = _worker_pids(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(outcomes)
        _until(lambda: len(outcomes) >= killed_at + 30, "traffic after the kill", server)
        _until(lambda: len(_worker_pids(server)) == 3, "a replacement worker", server)
        _until(lambda: _restarts(server) == 1, "one restart counted", server)
    finally:
        done.set()
        for caller in callers:
            caller.join()
    # Only requests in flight in the killed worker may fail: at most one per caller.
    assert outcomes.count("bad") == 0
    assert outcomes.count("lost") <= len(callers), outcomes
    assert outcomes[-10:] == ["ok"] * 10
    died = [line for line in _log_lines(server) if line["msg"] == "worker died: replacing it"]
    assert len(died) == 1 and died[0]["signal"] == "SIGKILL" and died[0]["pid"] == victim
    assert died[0]["level"] == "error"
    assert server.stop() == 0


def test_worker_crashing_at_every_start_stops_the_server(tmp_path):
    crashing_model(tmp_path)
    server = start_server("sklearn", tmp_path, "--workers=2", "--max_worker_restarts=2", wait=False)
    try:
        assert server.process.wait(timeout=DEADLINE) == 1
    finally:
        server.stop()
    lines = _log_lines(server)
    deaths = [line for line in lines if line["msg"] == "worker died: replacing it"]
    assert deaths and all(line["signal"] == "SIGKILL" for line in deaths)
    assert any(line["msg"] == "worker crash loop: stopping the server" for line in lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_while_draining_exits_quietly(serve, tmp_path, sig):
    marker = tmp_path / "in-predict"
    marked_slow_model(tmp_path / "model", marker, delay=60.0)
    server = serve(
        "sklearn", tmp_path / "model", "--model_name=slow", "--graceful_shutdown_timeout=90"
    )

    def slow_request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # dropped by the forced stop, as asked
            httpx.post(f"{server.url}/v1/models/slow:predict", json={"instances": IRIS_ROWS})

    caller = threading.Thread(target=slow_request, daemon=True)
    caller.start()
    _until(marker.exists, "the request is inside predict", server)
    server.process.send_signal(sig)
    _until(lambda: '"draining"' in server.log(), "draining", server)
    server.process.send_signal(sig)
    assert server.process.wait(timeout=DEADLINE) == 128 + sig
    log = server.log()
    assert "Traceback" not in log
    assert all(line["level"] not in ("error", "critical") for line in _log_lines(server)), log


def test_user_metrics_dir_keeps_files_the_server_did_not_write(tmp_path):
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "notes.txt").write_text("someone else's file")
    foreign = metrics_dir / f"counter_{os.getpid()}.db"  # a live process' metrics
    values = MmapedDict(str(foreign))
    values.write_value(mmap_key("other_jobs", "other_jobs_total", [], [], "x"), 3.0, 0.0)
    values.close()
    stale_pid = next(p for p in range(4_000_000, 4_100_000) if not pid_alive(p))
    (metrics_dir / f"counter_{stale_pid}.db").write_bytes(b"left by a dead process")
    iris_logistic(tmp_path / "model")
    server = start_server(
        "sklearn",
        tmp_path / "model",
        "--model_name=iris",
        "--workers=2",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    try:
        assert server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS}).is_success
        parsed = samples(server.get("/metrics").text)
        assert parsed[("modelport_worker_restarts_total", ())] == 0
        ours = {p.name for p in metrics_dir.iterdir()} - {"notes.txt", foreign.name}
        assert ours and all(name.endswith(".db") for name in ours)
    finally:
        assert server.stop() == 0
    assert sorted(p.name for p in metrics_dir.iterdir()) == sorted(["notes.txt", foreign.name])


def test_server_fault_logs_its_traceback_once_and_never_in_the_body(serve, tmp_path):
    exploding_model(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=bad")
    response = server.post("/v1/models/bad:predict", json={"instances": IRIS_ROWS})
    assert response.status_code == 500
    assert "boom inside the model" in response.json()["error"]
    assert "Traceback" not in response.text
    _until(lambda: '"request failed"' in server.log(), "the fault logged", server)
    failed = [line for line in _log_lines(server) if line["msg"] == "request failed"]
    assert len(failed) == 1
    assert "Traceback" in failed[0]["exc"]
    assert "RuntimeError: boom inside the model" in failed[0]["exc"]
    assert server.log().count("Traceback (most recent call last)") == failed[0]["exc"].count(
        "Traceback (most recent call last)"
    )


def test_workers_drain_within_the_grace_and_the_parent_exits_0(serve, tmp_path):
    marker = tmp_path / "in-predict"
    marked_slow_model(tmp_path / "model", marker, delay=60.0)
    server = serve(
        "sklearn",
        tmp_path / "model",
        "--model_name=slow",
        "--workers=2",
        "--graceful_shutdown_timeout=0.5",
        "--enable_grpc=false",
    )

    def slow_request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # cut off at the end of the grace
            httpx.post(f"{server.url}/v1/models/slow:predict", json={"instances": IRIS_ROWS})

    threading.Thread(target=slow_request, daemon=True).start()
    _until(marker.exists, "the request is inside predict", server)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=DEADLINE) == 0, server.log()
    assert time.monotonic() - signalled < 3.0  # the grace, not the parent's kill 10 s later
    assert "worker did not stop in time" not in server.log()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_sigterm_while_workers_start_exits_0(tmp_path):
    iris_logistic(tmp_path)
    server = start_server("sklearn", tmp_path, "--workers=2", wait=False)
    try:  # the two workers and multiprocessing's resource tracker: still importing
        _until(lambda: len(_children(server.process.pid)) >= 3, "workers spawned", server)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=DEADLINE) == 0, server.log()
    finally:
        server.stop()


def test_ctrl_c_drains_workers_once(serve, tmp_path):
    """Ctrl-C signals the whole process group: the workers must drain on the parent's
    forwarded SIGTERM only, not take it as a second signal (which drops requests)."""
    marker = tmp_path / "in-predict"
    marked_slow_model(tmp_path / "model", marker, delay=2.0)
    server = serve(
        "sklearn", tmp_path / "model", "--model_name=slow", "--workers=2", "--enable_grpc=false"
    )
    _until(lambda: len(_worker_pids(server)) == 2, "two workers started", server)
    answer: dict[str, int] = {}

    def slow_request() -> None:
        response = httpx.post(
            f"{server.url}/v1/models/slow:predict", json={"instances": IRIS_ROWS}, timeout=30
        )
        answer["status"] = response.status_code

    caller = threading.Thread(target=slow_request, daemon=True)
    caller.start()
    _until(marker.exists, "the request is inside predict", server)
    for pid in [*_worker_pids(server), server.process.pid]:  # as the terminal does
        os.kill(pid, signal.SIGINT)
    assert server.process.wait(timeout=DEADLINE) == 0, server.log()
    caller.join(10)
    assert answer == {"status": 200}
    assert '"stopping now"' not in server.log()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_workers_stop_when_the_parent_is_killed(tmp_path):
    iris_logistic(tmp_path)
    server = start_server("sklearn", tmp_path, "--workers=2", "--graceful_shutdown_timeout=1")
    try:
        _until(lambda: len(_worker_pids(server)) == 2, "two workers started", server)
        workers = _worker_pids(server)
        server.process.kill()
        server.process.wait()
        _until(lambda: not any(_running(pid) for pid in workers), "orphans exit", timeout=15)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/ready", timeout=2)
    finally:
        for pid in _worker_pids(server):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_port_in_use_with_workers_is_one_line_and_leaves_nothing(tmp_path):
    iris_logistic(tmp_path / "model")
    (tmp_path / "tmp").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = start_server(
            "sklearn",
            tmp_path / "model",
            "--workers=2",
            f"--http_port={port}",
            env={"TMPDIR": str(tmp_path / "tmp"), "PROMETHEUS_MULTIPROC_DIR": ""},
            wait=False,
        )
        try:
            assert server.process.wait(timeout=DEADLINE) == 3
        finally:
            server.stop()
    log = server.log()
    assert "Traceback" not in log
    errors = [line["msg"] for line in _log_lines(server) if line["level"] == "error"]
    assert errors == [
        f"[Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
        "address already in use"
    ], log
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("workers", ["--workers=1", "--workers=2"])
def test_downloaded_model_dir_is_removed_at_exit(tmp_path, workers):
    iris_logistic(tmp_path / "source")
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_server(
        "sklearn",
        f"file://{tmp_path / 'source'}",
        "--model_name=iris",
        workers,
        env={"TMPDIR": str(temp)},
    )
    try:
        assert list(temp.glob("modelport-model-*"))  # the download, while serving
        assert server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS}).is_success
    finally:
        server.stop()  # the exit code is other tests' business
    assert list(temp.glob("modelport-model-*")) == []
