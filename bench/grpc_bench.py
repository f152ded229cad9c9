"""gRPC cells of the benchmark: OIP ModelInfer, modelport against KServe's gRPC server.

Run by bench/run.sh after the REST bench (or alone: `.venv/bin/python bench/grpc_bench.py`),
with the fixtures of bench/fixtures.py (iris) and the KServe venv of bench/setup.sh.

Load comes from h2load (Debian's nghttp2-client) with a pre-framed body: the 5-byte gRPC
frame header and a ModelInferRequest, sent as HTTP/2 POSTs with `content-type:
application/grpc` and `te: trailers`. h2load counts any HTTP 200 as a success, and gRPC
errors arrive as 200s with a non-zero grpc-status trailer, so every body is first sent once
through a real gRPC channel and the answer compared with the in-process prediction (a wrong
answer fails the run), and modelport's own gRPC error count is read from /metrics after the
run. h2load's own CPU time is reported: below ~70% of its core it is not the bottleneck.

Cells: iris 1 row (typed contents), 1000 rows typed, 1000 rows raw; c1 (one connection),
c16 (16 connections, one stream each) and s16 (one connection, 16 concurrent streams).
Servers: modelport, KServe 0.21, and `grpc-floor` (bench/servers/grpc_floor.py): a bare
grpc.aio server answering from a cache keyed by the request bytes, i.e. grpc.aio's own cost
per call, the bound for any server built on it (modelport's and KServe's both are). All
servers are started first and pinned to --server-cpu (idle ones cost nothing); each round
runs every cell on every server back to back, the order rotated, so a disturbance of the
shared machine hits them alike. h2load runs on --load-cpu. Results go to
bench/results/grpc-<time>/report.md (and stdout).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np

from modelport.base.grpc import inference_pb2 as pb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"
IRIS_ROW = [6.9, 3.1, 5.4, 2.1]
DASH = "\u2013"  # en dash: "no value" in the tables
CELLS = {"c1": (1, 1), "c16": (16, 1), "s16": (1, 16)}  # name -> (connections, streams each)


def requests(model: Any) -> dict[str, tuple[bytes, list[int]]]:
    """Scenario -> (pre-framed body, expected labels)."""
    rng = np.random.default_rng(0)
    many = np.clip(rng.normal(np.array(IRIS_ROW), 1.0, size=(1000, 4)), 0.1, None).round(1)
    one = np.array([IRIS_ROW])
    out: dict[str, tuple[bytes, list[int]]] = {}
    for name, rows, raw in (("g1-typed", one, False), ("g1000-typed", many, False),
                            ("g1000-raw", many, True)):  # fmt: skip
        message = pb.ModelInferRequest(model_name="iris")
        tensor = message.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
        values = rows.astype(np.float32)
        if raw:
            message.raw_input_contents.append(values.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(values.ravel().tolist())
        payload = message.SerializeToString()
        expected = model.predict(values).tolist()
        out[name] = (struct.pack(">?I", False, len(payload)) + payload, expected)
    return out


def labels(answer: pb.ModelInferResponse) -> list[int]:
    output = answer.outputs[0]
    if answer.raw_output_contents:
        dtype = {"INT64": "<i8", "INT32": "<i4", "FP32": "<f4", "FP64": "<f8"}[output.datatype]
        return np.frombuffer(answer.raw_output_contents[0], dtype).astype(int).tolist()
    for field in ("int64_contents", "int_contents", "fp64_contents", "fp32_contents"):
        values = getattr(output.contents, field)
        if len(values):
            return [int(v) for v in values]
    return []


def check(port: int, body: bytes, expected: list[int]) -> str:
    """One real gRPC call with exactly the benchmark's bytes; '' when the answer is right."""
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: the pre-framed payload
        try:
            reply = call(body[5:], timeout=30)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    got = labels(pb.ModelInferResponse.FromString(reply))
    return "" if got == expected else f"wrong answer: {got[:5]}... != {expected[:5]}..."


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout} s")


def start(
    name: str, args: argparse.Namespace, http_port: int, out: Path
) -> subprocess.Popen[bytes]:
    model_dir = f"{args.work}/models/iris"
    grpc_port = http_port + 1
    if name == "modelport":
        argv = [args.modelport_python, "-m", "modelport.runtimes.sklearn", "--model_name=iris"]
        argv += [f"--model_dir={model_dir}", f"--http_port={http_port}", f"--grpc_port={grpc_port}"]
        argv += ["--host=127.0.0.1"]
    elif name == "grpc-floor":
        argv = [args.modelport_python, str(HERE / "servers" / "grpc_floor.py")]
        argv += ["--model_dir", model_dir, "--grpc_port", str(grpc_port), "--aio_loop", "uvloop"]
    else:
        argv = [f"{args.work}/kserve-venv/bin/python", str(HERE / "servers" / "kserve_sklearn.py")]
        argv += ["--model_dir", model_dir, "--model_name", "iris", "--http_port", str(http_port)]
        argv += ["--grpc_port", str(grpc_port), "--workers", "1"]
    log = open(out / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(grpc_port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    with_group = proc.pid
    try:
        os.killpg(with_group, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(with_group, signal.SIGKILL)
        proc.wait()


def h2load(port: int, body_file: Path, cell: str, seconds: int, cpu: str) -> dict[str, float]:
    connections, streams = CELLS[cell]
    argv = ["taskset", "-c", cpu, "h2load", "-D", str(seconds), "--warm-up-time=1"]
    argv += ["-c", str(connections), "-m", str(streams), "-t", "1", "-d", str(body_file)]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    argv += [f"http://127.0.0.1:{port}{METHOD}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) fail", text
    )
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text)
    if not (rps and done):
        raise RuntimeError(f"h2load output not understood:\n{text}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rps": float(rps[1]),
        "failed": int(done[3]),
        "mean_ms": _ms(mean[1]) if mean else float("nan"),
        "loadgen_cpu": cpu_s / (seconds + 1),
    }


def _ms(text: str) -> float:
    """h2load's '456us', '1.23ms' or '1.02s' in milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float("nan")


def grpc_errors(http_port: int) -> float:
    """modelport's count of answered gRPC infer calls that were not OK."""
    import urllib.request

    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    )
    pattern = r'modelport_requests_total\{[^}]*endpoint="infer"[^}]*protocol="grpc"[^}]*status="(\w+)"\} ([\d.e+]+)'
    total = 0.0
    for status, value in re.findall(pattern, text):
        if status != "OK":
            total += float(value)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument("--servers", default="modelport,kserve,grpc-floor")
    ap.add_argument("--scenarios", default="g1-typed,g1000-typed,g1000-raw")
    ap.add_argument("--cells", default="c1,c16,s16")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--port-base", type=int, default=19500)
    ap.add_argument("--modelport-python", default=sys.executable)
    args = ap.parse_args()
    out = REPO / "bench" / "results" / time.strftime("grpc-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    bodies = requests(joblib.load(f"{args.work}/models/iris/model.joblib"))
    scenarios, cells = args.scenarios.split(","), args.cells.split(",")
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    wrong = 0
    servers = args.servers.split(",")
    ports = {server: args.port_base + 10 * index for index, server in enumerate(servers)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for server in servers:
            procs[server] = start(server, args, ports[server], out)
        timed: dict[str, list[str]] = {}  # scenario -> servers whose answer was right
        for scenario in scenarios:
            body, expected = bodies[scenario]
            (out / f"{scenario}.bin").write_bytes(body)
            for server in servers:
                problem = check(ports[server] + 1, body, expected)
                print(f"check {server} {scenario}: {problem or 'OK'}", file=sys.stderr)
                if problem:
                    wrong += 1
                else:
                    timed.setdefault(scenario, []).append(server)
        turn = 0
        for _ in range(args.rounds):
            for scenario in scenarios:
                for cell in cells:
                    order = timed.get(scenario, [])
                    turn += 1
                    order = order[turn % len(order) :] + order[: turn % len(order)] if order else []
                    for server in order:
                        result = h2load(
                            ports[server] + 1,
                            out / f"{scenario}.bin",
                            cell,
                            args.duration,
                            args.load_cpu,
                        )
                        results.setdefault((server, scenario, cell), []).append(result)
                        print(f"{server} {scenario} {cell}: {result}", file=sys.stderr)
        if "modelport" in procs:
            errors = grpc_errors(ports["modelport"])
            print(f"modelport gRPC infer errors during the run: {errors:g}", file=sys.stderr)
            wrong += int(errors > 0)
    finally:
        for proc in procs.values():
            stop(proc)
    report = render(results, args, scenarios, cells)
    (out / "report.md").write_text(report)
    print(report)
    return 1 if wrong else 0


def render(results: dict[tuple[str, str, str], list[dict[str, float]]], args: argparse.Namespace,
           scenarios: list[str], cells: list[str]) -> str:  # fmt: skip
    def median(server: str, scenario: str, cell: str, key: str) -> float | None:
        runs = results.get((server, scenario, cell))
        return statistics.median(run[key] for run in runs) if runs else None

    lines = [
        f"gRPC ModelInfer, iris; servers on CPU {args.server_cpu}, h2load on CPU "
        f"{args.load_cpu}; {args.duration} s per cell, median of {args.rounds} round(s), "
        "servers interleaved. grpc-floor: grpc.aio answering from a cache (the transport's "
        "own cost).",
        "",
        "| scenario | cell | modelport req/s | KServe req/s | grpc-floor req/s | "
        "modelport ÷ KServe | grpc-floor ÷ KServe | modelport ÷ grpc-floor | "
        "mean ms (mp / ks / floor) | h2load CPU (mp / ks / floor) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = ("modelport", "kserve", "grpc-floor")

    def ratio(top: float | None, bottom: float | None) -> str:
        return f"{top / bottom:.2f}x" if top and bottom else DASH

    for scenario in scenarios:
        for cell in cells:
            mp, ks, fl = (median(name, scenario, cell, "rps") for name in names)
            row = [scenario, cell, _f(mp, 0), _f(ks, 0), _f(fl, 0)]
            row += [ratio(mp, ks), ratio(fl, ks), ratio(mp, fl)]
            means = [median(name, scenario, cell, "mean_ms") for name in names]
            row += [" / ".join(_f(m, 2) for m in means)]
            cpu = [median(name, scenario, cell, "loadgen_cpu") for name in names]
            row += [" / ".join(f"{c:.0%}" if c is not None else DASH for c in cpu)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
