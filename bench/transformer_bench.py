"""Transformer cell of the benchmark: a pass-through transformer in front of the sklearn
predictor, modelport's against KServe 0.21's, in the same run, on the same CPU.

Servers (all pinned to --server-cpu): the modelport sklearn predictor (iris), modelport's
pass-through transformer (`python -m modelport.runtimes.transformer`) and KServe's
(`servers/kserve_transformer.py`, a `kserve.Model` with the default identity hooks), both with
`--predictor_protocol v2` in front of that one predictor. wrk (on --wrk-cpu) sends the V2 JSON
1-row payload of bench/fixtures.py at c1 and c16 to each transformer and to the predictor
itself. Every server's answer is checked once against the in-process prediction first.
`transformer-floor` (servers/proxy_floor.py) is the least a Python pass-through can do: a raw
ASGI app forwarding the body's bytes with one aiohttp session, no parsing, metrics or logs.

Targets (issue 17): modelport's transformer >= 3x KServe's req/s at c16; p50 at c1 through
modelport's transformer <= 1.5x the predictor's own p50 at c1.
Run by bench/run.sh after the REST bench, or alone (after bench/setup.sh and fixtures.py):
`python3 bench/transformer_bench.py`. Report: bench/results/transformer-<time>/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench

MODEL, SCENARIO, CONCS = "iris", "v2-1", (1, 16)
PORT = 19700


def server_cfgs(args: Any) -> dict[str, dict[str, Any]]:
    """name -> bench.Server config; the transformers forward to the predictor at PORT."""
    w, py = args.work, args.modelport_python
    predictor = f"127.0.0.1:{PORT}"

    def predictor_cmd(model: str, port: int, run: str) -> tuple[list[str], dict[str, str]]:
        argv = [py, "-m", "modelport.runtimes.sklearn", f"--model_name={model}"]
        argv += [
            f"--model_dir={w}/models/{model}",
            f"--http_port={port}",
            f"--grpc_port={port + 1}",
        ]
        return argv, {}

    def modelport_cmd(model: str, port: int, run: str) -> tuple[list[str], dict[str, str]]:
        argv = [py, "-m", "modelport.runtimes.transformer", f"--model_name={model}"]
        argv += [f"--predictor_host={predictor}", "--predictor_protocol=v2"]
        argv += [f"--http_port={port}", f"--grpc_port={port + 1}"]
        return argv, {}

    def kserve_cmd(model: str, port: int, run: str) -> tuple[list[str], dict[str, str]]:
        argv = [
            f"{w}/kserve-venv/bin/python",
            os.path.join(bench.HERE, "servers", "kserve_transformer.py"),
        ]
        argv += ["--model_name", model, "--predictor_host", predictor, "--predictor_protocol", "v2"]
        argv += ["--http_port", str(port), "--grpc_port", str(port + 1), "--workers", "1"]
        return argv, {}

    def floor_cmd(model: str, port: int, run: str) -> tuple[list[str], dict[str, str]]:
        argv = [py, "-m", "uvicorn", "proxy_floor:app"]
        argv += ["--app-dir", os.path.join(bench.HERE, "servers"), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        argv += ["--no-access-log", "--log-level", "warning"]
        return argv, {"PREDICTOR_HOST": predictor}

    cfg = {"protocols": ("v2",)}
    return {
        "predictor": {**cfg, "name": "predictor", "cmd": predictor_cmd},
        "modelport-transformer": {**cfg, "name": "modelport-transformer", "cmd": modelport_cmd},
        "kserve-transformer": {**cfg, "name": "kserve-transformer", "cmd": kserve_cmd},
        "transformer-floor": {**cfg, "name": "transformer-floor", "cmd": floor_cmd},
    }


def targets(cells: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    ours, theirs = cells.get(("modelport-transformer", 16)), cells.get(("kserve-transformer", 16))
    if ours and theirs:
        ratio = ours["rps"] / theirs["rps"]
        out.append(
            {
                "what": "transformer req/s at c16 vs KServe's",
                "value": ratio,
                "bound": ">= 3",
                "ok": ratio >= 3,
            }
        )
    ours, direct = cells.get(("modelport-transformer", 1)), cells.get(("predictor", 1))
    if ours and direct:
        ratio = ours["p50_ms"] / direct["p50_ms"]
        out.append(
            {
                "what": "transformer p50 at c1 vs the predictor's own",
                "value": ratio,
                "bound": "<= 1.5",
                "ok": ratio <= 1.5,
            }
        )
    floor = cells.get(("transformer-floor", 1))
    if floor and direct:
        out.append(
            {
                "what": "transformer-floor p50 at c1 vs the predictor's own (what any "
                "Python pass-through can reach)",
                "value": floor["p50_ms"] / direct["p50_ms"],
                "bound": "(reference)",
                "ok": True,
            }
        )
    if ours and floor:
        out.append(
            {
                "what": "transformer p50 at c1 vs transformer-floor's",
                "value": ours["p50_ms"] / floor["p50_ms"],
                "bound": "(reference)",
                "ok": True,
            }
        )
    return out


def markdown(
    cells: dict[tuple[str, int], dict[str, Any]], goals: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    lines = [
        f"# Transformer cell: iris, V2 JSON 1 row ({meta['when']})",
        "",
        f"loadavg before: {meta['loadavg']}; servers on CPU {meta['server_cpu']}, wrk on CPU {meta['wrk_cpu']}; "
        f"{meta['duration']}s per cell, median of {meta['rounds']} round(s), servers interleaved",
        "",
        "| server | conc | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, conc), r in sorted(cells.items()):
        lines.append(
            f"| {name} | {conc} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} |"
        )
    lines += ["", "| target | value | bound | met |", "|---|---|---|---|"]
    for goal in goals:
        lines.append(
            f"| {goal['what']} | {goal['value']:.2f} | {goal['bound']} | {'yes' if goal['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument(
        "--modelport-python", default=os.path.join(bench.REPO, ".venv", "bin", "python")
    )
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--wrk-cpu", default="1")
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    ap.add_argument(
        "--servers",
        default="predictor,modelport-transformer,kserve-transformer,transformer-floor",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out_dir = os.path.join(bench.HERE, "results", f"transformer-{stamp}")
    os.makedirs(args.out_dir, exist_ok=True)
    cfgs = server_cfgs(args)
    wanted = args.servers.split(",")
    if "predictor" not in wanted:
        wanted.insert(0, "predictor")  # the transformers need it
    servers = {
        name: bench.Server(cfgs[name], MODEL, PORT + 10 * i, args) for i, name in enumerate(wanted)
    }
    meta = {"when": stamp, "loadavg": bench.loadavg(), "server_cpu": args.server_cpu,
            "wrk_cpu": args.wrk_cpu, "duration": args.duration, "rounds": args.rounds}  # fmt: skip
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    failed = False
    try:
        for server in servers.values():  # the predictor first: readiness may follow it
            bench.log(f"start {server.name}: ready in {server.start()}s")
        timed = []
        for server in servers.values():
            if not bench.check(server, [SCENARIO])[SCENARIO]["ok"]:
                failed = True
                continue
            bench.wrk(args, server, SCENARIO, 4, args.warmup)
            timed.append(server)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        turn = 0
        for _ in range(args.rounds):  # servers interleaved, order rotated: noise hits all
            for conc in CONCS:
                turn += 1
                for server in timed[turn % len(timed) :] + timed[: turn % len(timed)]:
                    result = bench.wrk(args, server, SCENARIO, conc, args.duration)
                    failed |= result["errors"] > 0
                    runs.setdefault((server.name, conc), []).append(result)
                    bench.log(
                        f"{server.name} c{conc}: {result['rps']} req/s "
                        f"p50 {result['p50_ms']:.2f} ms"
                    )
        for key, results in runs.items():
            cells[key] = {
                field: statistics.median(r[field] for r in results)
                for field in ("rps", "p50_ms", "p90_ms", "p99_ms", "errors")
            }
    finally:
        for server in reversed(list(servers.values())):
            server.stop()
    goals = targets(cells)
    report = markdown(cells, goals, meta)
    with open(os.path.join(args.out_dir, "report.md"), "w") as f:
        f.write(report)
    rows = [{"server": name, "conc": conc, **r} for (name, conc), r in sorted(cells.items())]
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "cells": rows, "targets": goals}, f, indent=1)
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
