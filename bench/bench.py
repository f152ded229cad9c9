"""modelport side-by-side benchmark driver (stdlib only; see bench/README.md).

Per model, start every server under test one after the other (each pinned with
taskset to --server-cpu, in its own process group), timing process start -> first
HTTP 200 on its ready path; check each server's answers against in-process
predictions; warm up; then run wrk (pinned to --wrk-cpu) cell by cell, every server
back to back within a cell with the order rotated, so machine noise hits all alike.
After the last cell, the resident memory of each server's process group is read.
Results: results.json, report.md and server logs in --out-dir
(default bench/results/<timestamp>/); the report is printed, and with
--update-readme it replaces the latest table in bench/README.md.
Timing never fails the run: exit 1 only for wrong answers, wrk errors or dead servers.
"""

import argparse
import array
import contextlib
import datetime
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCENARIOS = ("v1-1", "v2-1", "v2-1000", "v2b-1000")
PATHS = {
    "v1": "/v1/models/{name}:predict",
    "v2": "/v2/models/{name}/infer",
    "ready": "/v2/models/{name}/ready",
}
# The modelport runtime serving each model (the floors and peers know scikit-learn only,
# except the floors, which also predict XGBoost and LightGBM boosters natively).
MODEL_RUNTIME = {"iris": "sklearn", "rf20": "sklearn", "xgb20": "xgboost", "lgb20": "lightgbm"}
ML_MODULES = ("sklearn", "scipy", "pandas", "torch", "tensorflow", "xgboost", "lightgbm", "mlflow")
README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"
DASH = "\u2013"  # en dash: "no value" and ranges in the tables


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers


def server_table(args):
    """Every server the bench knows. `cmd(model, port, run_dir)` gives argv and env."""
    w, py = args.work, args.modelport_python

    def floor(engine, checked=False):
        def cmd(model, port, run):
            # Boosters and the ONNX graph need modelport's venv (xgboost, lightgbm, onnxruntime).
            native_sklearn = engine == "native" and MODEL_RUNTIME.get(model) == "sklearn"
            python = f"{w}/floor-venv/bin/python" if native_sklearn else py
            argv = [python, "-m", "uvicorn", "floor_app:app"]
            argv += ["--app-dir", os.path.join(HERE, "servers"), "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
            argv += ["--no-access-log", "--log-level", "warning"]
            env = {"MODEL_DIR": f"{w}/models/{model}", "MODEL_NAME": model}
            if checked:
                env["FLOOR_CHECKED"] = "1"
            return argv, {**env, "FLOOR_ENGINE": engine}

        return cmd

    def modelport(extra, ref=False):
        def cmd(model, port, run):
            runtime = MODEL_RUNTIME.get(model, "sklearn")
            argv = [py, "-m", f"modelport.runtimes.{runtime}", f"--model_name={model}"]
            argv += [f"--model_dir={w}/models/{model}", f"--http_port={port}"]
            if "--grpc_port" in args.modelport_help:  # keep side ports off other servers
                argv.append(f"--grpc_port={port + 1}")
            env = {}
            if ref:  # import `modelport` from $BENCH_REF instead of this checkout
                shadow = os.path.join(run, "ref-path")
                os.makedirs(shadow, exist_ok=True)
                link = os.path.join(shadow, "modelport")
                if not os.path.islink(link):
                    os.symlink(os.path.abspath(os.environ["BENCH_REF"]), link)
                env["PYTHONPATH"] = shadow
            return argv + extra, env

        return cmd

    def kserve(extra, env):
        def cmd(model, port, run):
            argv = [
                f"{w}/kserve-venv/bin/python",
                os.path.join(HERE, "servers", "kserve_sklearn.py"),
            ]
            argv += ["--model_dir", f"{w}/models/{model}", "--model_name", model]
            argv += ["--http_port", str(port), "--grpc_port", str(port + 1), "--workers", "1"]
            return argv + extra, env

        return cmd

    def mlserver(settings, model_settings):
        def cmd(model, port, run):
            os.makedirs(os.path.join(run, model), exist_ok=True)
            conf = {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": port + 1,
                "metrics_port": port + 2,
                "metrics_dir": os.path.join(run, ".metrics"),
                "load_models_at_startup": True,
                **settings,
            }
            mconf = {
                "name": model,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": f"{w}/models/{model}/model.joblib"},
                **model_settings,
            }
            with open(os.path.join(run, "settings.json"), "w") as f:
                json.dump(conf, f)
            with open(os.path.join(run, model, "model-settings.json"), "w") as f:
                json.dump(mconf, f)
            return [f"{w}/mlserver-venv/bin/mlserver", "start", run], {}

        return cmd

    batch_flags = [
        f"--max_batch_size={args.max_batch_size}",
        f"--max_batch_time={args.max_batch_time}",
    ]
    batch_settings = {"max_batch_size": args.max_batch_size, "max_batch_time": args.max_batch_time}
    all_payloads = ("v1", "v2", "v2b")
    pkgs = "uvicorn uvloop httptools orjson scikit-learn numpy"

    def variant(name, flags, batch_only=False):
        """modelport with extra flags (same venv and versions as `modelport`)."""
        return dict(
            name=name,
            cmd=modelport(flags),
            protocols=all_payloads,
            batch_only=batch_only,
            venv=None,
            pkgs="modelport",
        )

    return [
        dict(
            name="floor",
            cmd=floor("native"),
            protocols=all_payloads,
            ready="/",
            venv="floor-venv",
            pkgs=pkgs,
        ),
        # The same floor predicting with modelport's ONNX graph: the limit acceleration aims at.
        dict(
            name="floor-onnx",
            cmd=floor("onnx"),
            protocols=all_payloads,
            ready="/",
            venv=None,
            pkgs="onnxruntime skl2onnx onnxmltools xgboost-cpu lightgbm",
        ),
        # floor-onnx plus only what every answer must carry: modelport's V2 codec (with its
        # checks), KServe's histograms, the request metrics and the access line.
        dict(
            name="floor-onnx-checked",
            cmd=floor("onnx", checked=True),
            protocols=all_payloads,
            ready="/",
            venv=None,
            pkgs="onnxruntime skl2onnx onnxmltools xgboost-cpu lightgbm",
        ),
        dict(
            name="modelport",
            cmd=modelport([]),
            protocols=all_payloads,
            venv=None,
            pkgs="modelport starlette " + pkgs,
        ),
        # modelport from another checkout (BENCH_REF=DIR, e.g. a `git worktree` of main;
        # BENCH_REF_FLAGS: its extra flags): before/after comparisons of a change in one run.
        dict(
            name="modelport-ref",
            cmd=modelport(os.environ.get("BENCH_REF_FLAGS", "").split(), ref=True),
            protocols=all_payloads,
            venv=None,
            pkgs="modelport",
        ),
        variant("modelport-quiet", ["--access_log=false"]),
        variant("modelport-inline", ["--predict_threads=0"]),
        variant("modelport-native", ["--accelerate=off"]),
        variant("modelport-nobatch", ["--max_batch_size=1"], batch_only=True),
        variant("modelport-batch", batch_flags, batch_only=True),
        # kserve 0.21 implements the binary tensor extension on its V2 REST endpoint.
        dict(
            name="kserve",
            sklearn_only=True,
            cmd=kserve([], {}),
            protocols=all_payloads,
            venv="kserve-venv",
            pkgs="kserve fastapi starlette " + pkgs,
        ),
        dict(
            name="kserve-quiet",
            sklearn_only=True,
            cmd=kserve(
                ["--enable_latency_logging=false", "--configure_logging=false"],
                {"PYTHONWARNINGS": "ignore"},
            ),
            protocols=all_payloads,
            venv="kserve-venv",
            pkgs="kserve",
        ),
        # MLServer speaks V2 only and has no binary tensor extension on REST.
        dict(
            name="mlserver",
            sklearn_only=True,
            cmd=mlserver({}, {}),
            protocols=("v2",),
            venv="mlserver-venv",
            pkgs="mlserver mlserver-sklearn fastapi starlette " + pkgs,
        ),
        dict(
            name="mlserver-pw0",
            sklearn_only=True,
            cmd=mlserver({"parallel_workers": 0}, {}),
            protocols=("v2",),
            venv="mlserver-venv",
            pkgs="mlserver",
        ),
        dict(
            name="mlserver-batch",
            sklearn_only=True,
            cmd=mlserver({"parallel_workers": 0}, batch_settings),
            protocols=("v2",),
            batch_only=True,
            venv="mlserver-venv",
            pkgs="mlserver",
        ),
    ]


def pgroup_pids(pgid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after comm: state ppid pgrp ...
            pids.append(int(entry))
    return pids


def pgroup_cpu_s(pgid):
    """User + system CPU seconds used so far by the process group (children reaped included)."""
    ticks = 0
    for pid in pgroup_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


def pgroup_rss_mb(pgid):
    total = 0
    for pid in pgroup_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(x.split()[1]) for x in f if x.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return round(total / 1024, 1)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    def __init__(self, cfg, model, port, args):
        self.cfg, self.model, self.port, self.args = cfg, model, port, args
        self.name = cfg["name"]
        self.protocols = cfg["protocols"]
        self.log = os.path.join(args.out_dir, f"{self.name}-{model}.log")
        self.run_dir = os.path.join(args.work, "run", f"{self.name}-{model}")
        self.proc = None
        self.startups = []
        self.startup_cpu = []  # CPU seconds to ready: robust when other jobs share the CPU
        self.failed_checks = set()  # payloads answered wrongly: never timed

    def path(self, key):
        return self.cfg.get(key, PATHS[key]).format(name=self.model)

    def supports(self, model, scen, batch_cells):
        proto = scen.split("-")[0]
        if proto not in self.protocols or scen in self.failed_checks:
            return False
        return not self.cfg.get("batch_only") or f"{model}/{scen}" in batch_cells

    def start(self):
        """Start, wait for HTTP 200 on the ready path, return seconds since process start."""
        for p in range(self.port, self.port + 3):
            if port_open(p):
                raise RuntimeError(f"{self.name}: port {p} is already in use")
        argv, env = self.cfg["cmd"](self.model, self.port, self.run_dir)
        env = dict(os.environ, **env)
        with open(self.log, "a") as out:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                ["taskset", "-c", self.args.server_cpu, *argv],
                cwd=self.run_dir if os.path.isdir(self.run_dir) else HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        path = self.path("ready")
        while time.monotonic() - t0 < self.args.ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited rc={self.proc.returncode}, see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    secs = round(time.monotonic() - t0, 3)
                    self.startups.append(secs)
                    self.startup_cpu.append(pgroup_cpu_s(self.proc.pid))
                    return secs
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"not ready after {self.args.ready_timeout}s, see {self.log}")

    def rss_mb(self):
        return pgroup_rss_mb(self.proc.pid) if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM the process group we started (pgid == our child's PID), then SIGKILL."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            deadline = time.time() + grace
            if group_alive(proc.pid):
                os.killpg(proc.pid, sig)
            while group_alive(proc.pid) and time.time() < deadline:
                proc.poll()  # reaps the leader once it has exited
                time.sleep(0.05)
        proc.poll()


# --------------------------------------------------------------------------- requests


def payload_file(args, model, scen):
    ext = "bin" if scen.startswith("v2b") else "json"
    return os.path.join(args.work, "payloads", model, f"{scen}.{ext}")


def header_len(args, model, scen):
    if not scen.startswith("v2b"):
        return None
    with open(os.path.join(args.work, "payloads", model, f"{scen}.hlen")) as f:
        return f.read().strip()


def post(server, scen):
    proto = "v1" if scen.startswith("v1") else "v2"
    with open(payload_file(server.args, server.model, scen), "rb") as f:
        body = f.read()
    headers = {"Content-Type": "application/json"}
    hlen = header_len(server.args, server.model, scen)
    if hlen:
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": hlen,
        }
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", server.path(proto), body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


BIN_TYPES = {"INT64": "q", "INT32": "i", "FP32": "f", "FP64": "d", "BOOL": "b", "UINT8": "B"}


def predictions(scen, headers, data):
    """Decode V1 / V2 JSON / V2 binary-extension answers into a flat list."""
    if scen.startswith("v1"):
        return json.loads(data)["predictions"], "json"
    hlen = headers.get("inference-header-content-length")
    head = json.loads(data[: int(hlen)] if hlen else data)
    out = head["outputs"][0]
    size = (out.get("parameters") or {}).get("binary_data_size")
    if hlen and size is not None:
        values = array.array(BIN_TYPES[out["datatype"]])
        values.frombytes(data[int(hlen) : int(hlen) + size])
        return values.tolist(), "binary"
    flat = out["data"]
    while flat and isinstance(flat[0], list):  # nested [[2], ...] -> [2, ...]
        flat = [v for row in flat for v in row]
    return flat, "json"


def agree(answer, expected):
    """Labels equal; scores (XGBoost, LightGBM probabilities) within FP32 rounding."""
    if isinstance(expected, float) and isinstance(answer, int | float):
        return abs(answer - expected) <= 1e-5 * (1 + abs(expected))
    return answer == expected


def wait_engine(server, timeout=180):
    """Poll modelport's model metadata until acceleration has a verdict; its parameters."""
    deadline = time.monotonic() + timeout
    params = {}
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", f"/v2/models/{server.model}")
            params = json.loads(conn.getresponse().read()).get("parameters") or {}
            conn.close()
        except (OSError, ValueError):
            pass
        if params.get("accelerate") not in (None, "pending", "converting"):
            return params
        time.sleep(0.2)
    return {**params, "timeout": True}


def check(server, scenarios):
    """Send each payload once; compare with the in-process predictions."""
    with open(os.path.join(server.args.work, "payloads", server.model, "expected.json")) as f:
        expected = json.load(f)
    out = {}
    for scen in scenarios:
        if scen.split("-")[0] not in server.protocols:
            continue
        exp = expected[scen]
        res = {"ok": False, "agreement": 0.0}
        try:
            status, headers, data = post(server, scen)
            res["status"] = status
            if scen.endswith("-1") or status != 200:
                res["response"] = data[:400].decode(errors="replace")
            if status == 200:
                preds, res["encoding"] = predictions(scen, headers, data)
                if len(preds) == len(exp):
                    same = sum(agree(a, b) for a, b in zip(preds, exp, strict=True))
                    res["agreement"] = same / len(exp)
                # Single rows must match exactly; FP32 rounding may flip a rare batch row.
                res["ok"] = res["agreement"] == 1.0 or (len(exp) > 1 and res["agreement"] >= 0.999)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            res["error"] = repr(e)[:300]
        out[scen] = res
        flag = "OK" if res["ok"] else "MISMATCH"
        log(
            f"check {server.name}/{server.model} {scen}: {flag} agreement={res['agreement']:.3f}"
            + (f" {res.get('response', '')[:160]}" if not res["ok"] or scen.endswith("-1") else "")
        )
    return out


# --------------------------------------------------------------------------- load


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_pressure_us():
    """Total µs some task waited for a CPU (Linux PSI); None without PSI."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def wrk(args, server, scen, conc, duration):
    proto = "v1" if scen.startswith("v1") else "v2"
    url = f"http://127.0.0.1:{server.port}{server.path(proto)}"
    cmd = ["taskset", "-c", args.wrk_cpu, "wrk", "-t1", f"-c{conc}", f"-d{duration}s"]
    cmd += ["--timeout", "10s", "-s", os.path.join(HERE, "post.lua"), url, "--"]
    cmd += [payload_file(args, server.model, scen), header_len(args, server.model, scen) or ""]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in p.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if p.returncode or line is None:
        raise RuntimeError(f"wrk failed: {p.stdout[-300:]}{p.stderr[-300:]}")
    r = json.loads(line[len("BENCHJSON ") :])
    lat = r["latency_us"]
    return {
        "requests": r["requests"],
        "rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "p50_ms": lat["p50"] / 1e3,
        "p90_ms": lat["p90"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "mean_ms": round(lat["mean"] / 1e3, 3),
        "errors": sum(r["errors"].values()),
        "error_detail": r["errors"],
    }


def session(servers, model, args, results):
    """Start the servers of one model, check, warm up, run every cell, measure RSS, stop."""
    cells = [(scen, c) for scen in args.scenarios for c in args.conc]
    cells += [(s, c) for (m, s, c) in args.extra_cells if m == model]
    live = []
    try:
        for s in servers:  # one at a time: start-up is timed on an otherwise idle CPU
            key = f"{s.name}/{model}"
            try:
                for i in range(args.startup_repeats):
                    if i:
                        s.stop()
                    secs = s.start()
                    log(f"started {key} (pid {s.proc.pid}, port {s.port}): ready in {secs:.3f} s")
            except RuntimeError as e:
                log(f"FAILED: {key}: {e}")
                results["failed"].append(f"{key}: start: {e}")
                s.stop()
                continue
            results["startup"][key] = {
                "ready_s": round(statistics.median(s.startups), 3),
                "ready_s_all": s.startups,
                "ready_cpu_s": round(statistics.median(s.startup_cpu), 2),
                "rss_ready_mb": s.rss_mb(),
            }
            live.append(s)
        for s in live:  # acceleration switches after ready: cells measure the settled server
            if s.name.startswith("modelport") and s.name != "modelport-native":
                engine = results["engines"][f"{s.name}/{model}"] = wait_engine(s)
                log(f"engine {s.name}/{model}: {engine}")
        for s in live:
            checks = results["checks"][f"{s.name}/{model}"] = check(s, SCENARIOS)
            s.failed_checks = {scen for scen, c in checks.items() if not c["ok"]}
        if args.warmup > 0:
            for s in live:
                for scen in dict.fromkeys(sc for sc, _ in cells):
                    if s.supports(model, scen, args.batch_cells):
                        wrk(args, s, scen, 4, args.warmup)
        for rnd in range(args.rounds):
            for i, (scen, conc) in enumerate(cells):
                elig = [s for s in live if s.supports(model, scen, args.batch_cells)]
                if not elig:
                    continue
                k = (i + rnd) % len(elig)
                for s in elig[k:] + elig[:k]:
                    if not s.alive():
                        continue
                    la, psi0, t0 = loadavg(), cpu_pressure_us(), time.time()
                    cpu0 = pgroup_cpu_s(s.proc.pid)
                    try:
                        r = wrk(args, s, scen, conc, args.duration)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log(f"FAILED: {s.name} {model} {scen} c={conc}: {e}")
                        results["failed"].append(f"{s.name}/{model} {scen} c={conc}: {e}"[:500])
                        continue
                    psi = cpu_pressure_us()
                    cpu = pgroup_cpu_s(s.proc.pid) - cpu0
                    # CPU time the server spent per answer: barely moved by other jobs
                    r["cpu_us_per_req"] = (
                        round(cpu / r["requests"] * 1e6, 1) if r["requests"] else None
                    )
                    r["cpu_wait_pct"] = (
                        round((psi - psi0) / (time.time() - t0) / 1e4, 1)
                        if psi is not None
                        else None
                    )
                    results["runs"].append(
                        dict(
                            server=s.name,
                            model=model,
                            scenario=scen,
                            conc=conc,
                            round=rnd,
                            loadavg=la[0],
                            **r,
                        )
                    )
                    log(
                        f"{s.name:15s} {model} {scen:8s} c={conc:<3d} {r['rps']:8.1f} req/s "
                        f"p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:7.2f} ms err {r['errors']} "
                        f"load {la[0]} cpu-wait {r['cpu_wait_pct']}%"
                    )
        for s in live:
            key = f"{s.name}/{model}"
            if s.alive():
                results["startup"][key]["rss_after_load_mb"] = s.rss_mb()
            else:
                results["failed"].append(f"{key}: died during the run, see {s.log}")
    finally:
        for s in servers:
            s.stop()


# --------------------------------------------------------------------------- report


def summarize(results, args):
    runs = results["runs"]
    floor = {
        (r["model"], r["scenario"], r["conc"], r["round"]): r
        for r in runs
        if r["server"] == "floor"
    }
    table = []
    keys = dict.fromkeys((r["model"], r["scenario"], r["conc"]) for r in runs)
    order = {s: i for i, s in enumerate(SCENARIOS)}
    for model, scen, conc in sorted(
        keys, key=lambda k: (args.models.index(k[0]), order[k[1]], k[2])
    ):
        for name in args.servers:
            rs = [
                r
                for r in runs
                if (r["server"], r["model"], r["scenario"], r["conc"]) == (name, model, scen, conc)
            ]
            if not rs:
                continue
            row = {
                "server": name,
                "model": model,
                "scenario": scen,
                "conc": conc,
                "rounds": len(rs),
            }
            for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req"):
                vals = [r[k] for r in rs if r.get(k) is not None]
                row[k] = round(statistics.median(vals), 3) if vals else None
            row["rps_min"], row["rps_max"] = min(r["rps"] for r in rs), max(r["rps"] for r in rs)
            row["errors"] = sum(r["errors"] for r in rs)
            row["cpu_wait_pct"] = max((r["cpu_wait_pct"] or 0) for r in rs)
            fl = [floor.get((model, scen, conc, r["round"])) for r in rs]
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"):  # per-round ratio, median
                ratios = [
                    r[k] / f[k]
                    for r, f in zip(rs, fl, strict=True)
                    if f and f.get(k) and r.get(k) is not None
                ]
                row[f"{k}_x_floor"] = round(statistics.median(ratios), 3) if ratios else None
            table.append(row)
    return table


def table_cell(table, server, model, scen, conc):
    return next(
        (
            r
            for r in table
            if (r["server"], r["model"], r["scenario"], r["conc"]) == (server, model, scen, conc)
        ),
        None,
    )


def targets(results):
    """The issue's targets as measured ratios (informational, never a pass/fail test).

    Only cells without wrk errors count; a target whose cells were not run is left out.
    """
    t, out = results["table"], []
    models = results["args"]["models"]

    def add(what, value, op, bound, context=""):
        if value is None:
            status = "n/a"
        else:
            status = "meets" if (value >= bound if op == ">=" else value <= bound) else "misses"
        out.append(
            {
                "target": what,
                "measured": value,
                "goal": f"{op} {bound}",
                "status": status,
                "context": context,
            }
        )

    def cell(*key):
        c = table_cell(t, *key)
        return c if c and not c["errors"] else None

    def ratio(a, b, k="rps"):
        return round(a[k] / b[k], 2) if a and b and b[k] else None

    def x_floor(c, k):
        return c and c[f"{k}_x_floor"]

    def inline(c, k):
        """Context: the same ratio with predict on the event loop (`--predict_threads=0`)."""
        return f"`modelport-inline`: {fmt(x_floor(c, k))}" if c else ""

    if "iris" in models:
        for scen, label in (("v2-1", "V2"), ("v1-1", "V1")):
            mp16 = cell("modelport", "iris", scen, 16)
            add(f"iris {label} 1 row c16: req/s ÷ floor", x_floor(mp16, "rps"), ">=", 0.9)
            for peer in ("kserve", "kserve-quiet", "mlserver", "mlserver-pw0"):
                if table_cell(t, peer, "iris", scen, 16):
                    pc = cell(peer, "iris", scen, 16)
                    add(f"iris {label} 1 row c16: req/s ÷ {peer}", ratio(mp16, pc), ">=", 2)
            mp1 = cell("modelport", "iris", scen, 1)
            add(
                f"iris {label} 1 row c1: p50 ÷ floor",
                x_floor(mp1, "p50_ms"),
                "<=",
                1.2,
                inline(cell("modelport-inline", "iris", scen, 1), "p50_ms"),
            )
    accelerate_targets(t, models, add, cell, ratio, x_floor, results)
    for model in models:
        for conc in (16, 1):
            b = cell("modelport", model, "v2b-1000", conc)
            j = cell("modelport", model, "v2-1000", conc)
            floor_gain = ratio(
                cell("floor", model, "v2b-1000", conc), cell("floor", model, "v2-1000", conc)
            )
            add(
                f"{model} V2 1000 rows c{conc}: binary ÷ JSON req/s (modelport)",
                ratio(b, j),
                ">=",
                2,
                f"the floor's own binary ÷ JSON: {fmt(floor_gain)}",
            )
            add(
                f"{model} V2 1000 rows JSON c{conc}: req/s ÷ floor",
                x_floor(j, "rps"),
                ">=",
                0.9,
                inline(cell("modelport-inline", model, "v2-1000", conc), "rps"),
            )
    for model, scen, conc in results["args"]["extra_cells"]:
        if model not in models:
            continue
        on = cell("modelport-batch", model, scen, conc)
        off = cell("modelport-nobatch", model, scen, conc)
        add(f"{model} {scen} c{conc}: batching on ÷ off, req/s", ratio(on, off), ">=", 3)
        add(f"{model} {scen} c{conc}: batching on ÷ off, p99", ratio(on, off, "p99_ms"), "<=", 1)
    st = results["startup"].get("modelport/iris")
    fl = results["startup"].get("floor/iris")
    if st:
        context = ""
        if fl and fl["ready_s"]:
            context = f"floor: {fl['ready_s']:.2f} s, modelport ÷ floor {st['ready_s'] / fl['ready_s']:.2f}"
        add("start-up to ready, sklearn runtime, iris (s)", st["ready_s"], "<=", 1.5, context)
        if st.get("ready_cpu_s") is not None:
            context = ""
            if fl and fl.get("ready_cpu_s"):
                context = f"floor: {fl['ready_cpu_s']:.2f} s"
            add("start-up to ready, CPU time, iris (s)", st["ready_cpu_s"], "<=", 1.5, context)
    imp = results.get("import_check") or {}
    if "ml_modules" in imp:
        mods = imp["ml_modules"]
        out.append(
            {
                "target": "`import modelport.base` pulls no ML framework",
                "measured": ", ".join(mods) or "none",
                "goal": "none",
                "status": "misses" if mods else "meets",
            }
        )
    return out


def accelerate_targets(t, models, add, cell, ratio, x_floor, results):
    """Issue 15: ONNX Runtime under the tabular runtimes."""
    if "rf20" in models:
        mp = cell("modelport", "rf20", "v2-1", 16)
        add("rf20 V2 1 row c16: req/s ÷ floor", x_floor(mp, "rps"), ">=", 20)
        onnx = cell("floor-onnx", "rf20", "v2-1", 16)
        checked = cell("floor-onnx-checked", "rf20", "v2-1", 16)
        context = ""
        if ratio(checked, onnx) is not None:
            context = f"floor-onnx-checked ÷ floor-onnx: {ratio(checked, onnx):.2f}"
        add("rf20 V2 1 row c16: req/s ÷ floor-onnx", ratio(mp, onnx), ">=", 0.8, context)
    if "iris" in models:
        mp = cell("modelport", "iris", "v2-1", 1)
        add("iris V2 1 row c1: p50 ÷ floor", x_floor(mp, "p50_ms"), "<=", 0.8)
        onnx = cell("floor-onnx", "iris", "v2-1", 1)
        checked = cell("floor-onnx-checked", "iris", "v2-1", 1)
        context = ""
        if ratio(checked, onnx, "p50_ms") is not None:
            context = f"floor-onnx-checked ÷ floor-onnx: {ratio(checked, onnx, 'p50_ms'):.2f}"
        add("iris V2 1 row c1: p50 ÷ floor-onnx", ratio(mp, onnx, "p50_ms"), "<=", 1.2, context)
        native = cell("modelport-native", "iris", "v2-1", 1)
        add("iris V2 1 row c1, --accelerate off: p50 ÷ floor", x_floor(native, "p50_ms"), "<=", 1.2)
    for model in ("xgb20", "lgb20"):
        if model not in models:
            continue
        for scen in ("v2-1", "v2-1000"):
            for conc in (1, 16):
                acc, nat = (
                    cell("modelport", model, scen, conc),
                    cell("modelport-native", model, scen, conc),
                )
                add(
                    f"{model} {scen} c{conc}: req/s accelerated ÷ native",
                    ratio(acc, nat),
                    ">=",
                    0.95,
                )
        acc, nat = cell("modelport", model, "v2-1", 16), cell("modelport-native", model, "v2-1", 16)
        if model == "xgb20":
            add(
                "xgb20 V2 1 row c16: CPU µs/req accelerated ÷ native",
                ratio(acc, nat, "cpu_us_per_req"),
                "<=",
                0.9,
            )
    start = results["startup"]
    for model in models:
        acc, nat = start.get(f"modelport/{model}"), start.get(f"modelport-native/{model}")
        if acc and nat:
            add(
                f"{model}: start-up s accelerated ÷ native",
                round(acc["ready_s"] / nat["ready_s"], 2),
                "<=",
                1.1,
            )
            a, n = acc.get("rss_after_load_mb"), nat.get("rss_after_load_mb")
            add(
                f"{model}: RSS after load accelerated ÷ native",
                round(a / n, 2) if a and n else None,
                "<=",
                1.5,
                f"{fmt(a, '.0f')} MB vs {fmt(n, '.0f')} MB",
            )


def fmt(v, spec=".2f"):
    return DASH if v is None else format(v, spec)


def markdown(results, args):
    m = results["meta"]
    las = [r["loadavg"] for r in results["runs"]] or [0]
    waits = [r["cpu_wait_pct"] or 0 for r in results["runs"]] or [0]
    out = [
        f"### Run of {m['date_utc']}",
        "",
        f"- machine: `nproc` = {m['nproc']}, {m['cpu']}, {m['mem']} RAM, {m['os']}, "
        f"kernel {m['kernel']}",
        f"- servers pinned to CPU {args.server_cpu} (`taskset`), {m['wrk']} (1 thread) "
        f"pinned to CPU {args.wrk_cpu}; interleaved cell by cell, order rotated; "
        f"{args.duration} s per cell, {args.rounds} round(s), warm-up {args.warmup} s per payload",
        f"- 1-min load average: start {m['loadavg_start'][0]}, "
        f"during cells {min(las)}{DASH}{max(las)}, end {m['loadavg_end'][0]}; "
        f"CPU wait (PSI) per cell max {max(waits):.0f}%",
        f"- batching: `modelport-batch` = modelport `--max_batch_size={args.max_batch_size} "
        f"--max_batch_time={args.max_batch_time}`, `modelport-nobatch` = `--max_batch_size=1`, "
        "`modelport` = its defaults",
        f"- modelport: git {m.get('git', '?')}",
        "- versions:",
    ]
    out += [f"  - {k}: {v}" for k, v in m["versions"].items()]

    t = results["table"]
    out += ["", "#### Headline: req/s (÷ floor) per cell", ""]
    servers = [s for s in args.servers if any(r["server"] == s for r in t)]
    out.append("| model | payload | conc | " + " | ".join(servers) + " |")
    out.append("|---|---|---:|" + "---:|" * len(servers))
    for model, scen, conc in dict.fromkeys((r["model"], r["scenario"], r["conc"]) for r in t):
        vals = []
        for s in servers:
            c = table_cell(t, s, model, scen, conc)
            vals.append("n/a" if c is None else f"{c['rps']:.0f} ({fmt(c['rps_x_floor'])})")
        out.append(f"| {model} | {scen} | {conc} | " + " | ".join(vals) + " |")

    out += [
        "",
        "#### All cells (median over rounds; ratios per round vs the floor in the same cell, "
        "then median)",
        "",
        "CPU µs/req: user + system CPU time of the server's process group during the cell divided "
        "by the answers; unlike req/s it barely moves when other jobs take CPU time. CPU wait: "
        "highest share of a cell's time in which some task on the machine waited for a CPU "
        "(Linux PSI); high values mean the cell was disturbed.",
        "",
        "| server | model | payload | conc | req/s | ÷ floor | p50 ms | ÷ floor | p99 ms | ÷ floor "
        "| CPU µs/req | ÷ floor | req/s range | CPU wait % | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in t:
        out.append(
            f"| {r['server']} | {r['model']} | {r['scenario']} | {r['conc']} | {r['rps']:.0f} | "
            f"{fmt(r['rps_x_floor'])} | {r['p50_ms']:.2f} | {fmt(r['p50_ms_x_floor'])} | "
            f"{r['p99_ms']:.2f} | {fmt(r['p99_ms_x_floor'])} | "
            f"{fmt(r.get('cpu_us_per_req'), '.0f')} | {fmt(r.get('cpu_us_per_req_x_floor'))} | "
            f"{r['rps_min']:.0f}{DASH}{r['rps_max']:.0f} | {r['cpu_wait_pct']:.0f} | "
            f"{r['errors']} |"
        )

    out += [
        "",
        "#### Start-up and memory",
        "",
        "Start-up: process start (fork of `taskset`) to the first HTTP 200 on the ready path, "
        f"median of {args.startup_repeats}, servers started one at a time. RSS: VmRSS summed over "
        "the server's process group, right after ready and after the last cell. Start-up CPU s: "
        "user + system CPU time the process group used until ready (less sensitive to other jobs "
        "on the machine than the wall time).",
        "",
        "| server | model | start-up s | start-up CPU s | RSS ready MB | RSS after load MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, v in results["startup"].items():
        server, model = key.split("/")
        out.append(
            f"| {server} | {model} | {v['ready_s']:.2f} | {fmt(v.get('ready_cpu_s'))} | "
            f"{fmt(v.get('rss_ready_mb'), '.0f')} | "
            f"{fmt(v.get('rss_after_load_mb'), '.0f')} |"
        )
    imp = results.get("import_check") or {}
    if imp:
        out += [
            "",
            f"`import modelport.base`: {fmt(imp.get('seconds'), '.3f')} s; ML modules loaded "
            "after importing every `modelport.base` submodule: "
            f"{', '.join(imp.get('ml_modules', [])) or 'none'} {imp.get('error', '')}".rstrip(),
        ]

    out += [
        "",
        "#### Targets from the issue (measured ratios; informational)",
        "",
        "| target | goal | measured | | context (same run) |",
        "|---|---:|---:|---|---|",
    ]
    for x in results["targets"]:
        v = x["measured"]
        v = v if isinstance(v, str) else fmt(v)
        context = x.get("context", "")
        out.append(f"| {x['target']} | {x['goal']} | {v} | {x['status']} | {context} |")

    corr = results.get("correctness") or {}
    if corr:
        out += [
            "",
            "#### Native vs accelerated (10,000 FP32 rows, `bench/correctness.py`)",
            "",
            "Both engines answer every row (whatever batch sizes the timings give ONNX Runtime); "
            "labels are `predict`, scores `predict_proba`.",
            "",
            "| model | engine | identical labels | largest score difference | verdict |",
            "|---|---|---:|---:|---|",
        ]
        for model, c in corr.items():
            if not isinstance(c, dict):
                continue
            share = c.get("identical_labels")
            out.append(
                f"| {model} | {c.get('engine', DASH)} | "
                f"{DASH if share is None else f'{share:.2%}'} | "
                f"{fmt(c.get('max_score_diff'), '.2g')} | "
                f"{c.get('status') or c.get('error', '')} |"
            )
    engines = results.get("engines") or {}
    if engines:
        out += ["", "Engines after the switch (model metadata `parameters`):", ""]
        out += [f"- **{k}**: {v.get('engine')} ({v.get('accelerate')})" for k, v in engines.items()]

    out += [
        "",
        "#### Correctness (before timing; batch = share of 1000 predictions equal to in-process)",
        "",
    ]
    for key, checks in results["checks"].items():
        parts = []
        for scen, c in checks.items():
            s = "OK" if c["ok"] else "FAIL"
            if not scen.endswith("-1"):
                s += f" {c['agreement']:.3f}"
            if c.get("encoding") == "binary":
                s += " (binary answer)"
            parts.append(f"{scen} {s}")
        out.append(f"- **{key}**: " + ", ".join(parts))
    out += [f"- **FAILED** {f}" for f in results["failed"]]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def pkg_versions(python, pkgs):
    code = (
        "import sys, importlib.metadata as m\n"
        "def v(p):\n"
        "    try: return m.version(p)\n"
        "    except m.PackageNotFoundError: return 'missing'\n"
        "print(' '.join(f'{p}=={v(p)}' for p in sys.argv[1:]))"
    )
    p = subprocess.run([python, "-c", code, *pkgs.split()], capture_output=True, text=True)
    return (p.stdout.strip() or p.stderr.strip())[-300:]


def git_describe():
    """The commit modelport ran from, '+dirty' when base/ or runtimes/ had local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "base", "runtimes"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def machine_info(args, cfgs):
    def first(path, key, sep=":"):
        with open(path) as f:
            return next((x.split(sep, 1)[1].strip() for x in f if x.startswith(key)), "?")

    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    info = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "os": first("/etc/os-release", "PRETTY_NAME", "=").strip('"'),
        "kernel": platform.release(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "nproc": os.cpu_count(),
        "mem": first("/proc/meminfo", "MemTotal"),
        "python_driver": platform.python_version(),
        "wrk": (wrk_v.stdout + wrk_v.stderr).splitlines()[0].split(" [")[0],
        "versions": {},
        "git": git_describe(),
    }
    for c in cfgs:
        py = (
            os.path.join(args.work, c["venv"], "bin", "python")
            if c["venv"]
            else args.modelport_python
        )
        info["versions"][c["name"]] = pkg_versions(py, c["pkgs"])
    return info


def correctness(args):
    """Native vs accelerated answers on 10,000 rows per model (bench/correctness.py)."""
    script = os.path.join(HERE, "correctness.py")
    p = subprocess.run(
        [args.modelport_python, script, "--work", args.work, "--models", ",".join(args.models)],
        capture_output=True,
        text=True,
    )
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}


def import_check(python):
    """Time `import modelport.base`, then import every base submodule: list ML frameworks."""
    code = (
        "import importlib, json, pkgutil, sys, time\n"
        "t = time.perf_counter()\n"
        "import modelport.base as b\n"
        "d = time.perf_counter() - t\n"
        "for m in pkgutil.walk_packages(b.__path__, 'modelport.base.'):\n"
        "    importlib.import_module(m.name)\n"
        f"mods = [m for m in {ML_MODULES!r} if m in sys.modules]\n"
        "print(json.dumps({'seconds': d, 'ml_modules': mods}))"
    )
    p = subprocess.run([python, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}


def update_readme(report):
    path = os.path.join(HERE, "README.md")
    with open(path) as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        log(f"{path} has no {README_START} ... {README_END} markers; not updated")
        return
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{README_START}\n{report}{README_END}{tail}")
    log(f"updated {path}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--servers",
        default="floor,floor-onnx,floor-onnx-checked,modelport,modelport-native,modelport-inline,modelport-nobatch,"
        "modelport-batch,kserve,mlserver,mlserver-pw0",
        help="comma list; 'floor' is always added (ratios need it). Known: floor, modelport, "
        "floor-onnx, floor-onnx-checked, modelport-ref (modelport from the checkout in $BENCH_REF), modelport-quiet, modelport-inline, modelport-native, modelport-nobatch, modelport-batch, kserve, kserve-quiet, mlserver, mlserver-pw0, mlserver-batch",
    )
    ap.add_argument("--models", default="iris,rf20,xgb20,lgb20")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="payload cells")
    ap.add_argument("--conc", default="1,16", help="wrk connections")
    ap.add_argument(
        "--extra-cells",
        default="rf20/v2-1/64",
        help="MODEL/PAYLOAD/CONC cells beyond the grid (batching cells); '' for none",
    )
    ap.add_argument(
        "--batch-cells",
        default="rf20/v2-1",
        help="MODEL/PAYLOAD pairs where the *-batch servers run (every concurrency)",
    )
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-batch-time", type=float, default=0.002, help="seconds")
    ap.add_argument("--duration", type=int, default=8, help="seconds per measured cell")
    ap.add_argument(
        "--warmup", type=int, default=2, help="seconds of wrk -c4 per payload per server"
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--startup-repeats", type=int, default=3, help="start-up measurements per server"
    )
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--wrk-cpu", default="1")
    ap.add_argument("--ready-timeout", type=int, default=120)
    ap.add_argument("--port-base", type=int, default=19300)
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument("--modelport-python", default=os.path.join(REPO, ".venv", "bin", "python"))
    ap.add_argument("--out-dir", help="default bench/results/<timestamp>")
    ap.add_argument(
        "--update-readme", action="store_true", help="write the report into bench/README.md"
    )
    args = ap.parse_args(argv)
    args.servers = list(dict.fromkeys(["floor", *args.servers.split(",")]))
    args.models = args.models.split(",")
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.conc = [int(c) for c in args.conc.split(",")]
    args.extra_cells = [
        (m, s, int(c)) for m, s, c in (x.split("/") for x in args.extra_cells.split(",") if x)
    ]
    args.batch_cells = set(args.batch_cells.split(","))
    args.out_dir = args.out_dir or os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S"))
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: blocks
    with contextlib.suppress(OSError, ValueError):  # the driver stays off the servers' CPU
        os.sched_setaffinity(0, {int(args.wrk_cpu)})

    p = subprocess.run(
        [args.modelport_python, "-m", "modelport.runtimes.sklearn", "--help"],
        capture_output=True,
        text=True,
    )
    args.modelport_help = p.stdout + p.stderr
    known = {c["name"]: c for c in server_table(args)}
    unknown = [s for s in args.servers if s not in known]
    if unknown:
        sys.exit(f"unknown servers {unknown}; known: {', '.join(known)}")
    if any(s.startswith("modelport") for s in args.servers):
        if p.returncode != 0:
            log(
                "WARNING: modelport's sklearn runtime does not run yet: "
                + args.modelport_help.strip()[-300:]
            )
        elif "--max_batch_size" not in args.modelport_help:
            log(
                "WARNING: modelport does not list --max_batch_size in --help yet; "
                "modelport-batch may fail"
            )
    cfgs = [known[s] for s in args.servers]

    results = {
        "meta": machine_info(args, cfgs),
        "args": {
            k: (sorted(v) if isinstance(v, set) else v)
            for k, v in vars(args).items()
            if k != "modelport_help"
        },
        "runs": [],
        "checks": {},
        "startup": {},
        "engines": {},
        "failed": [],
    }
    results["meta"]["loadavg_start"] = loadavg()
    if "modelport" in args.servers:
        results["import_check"] = import_check(args.modelport_python)
    for model in args.models:
        servers = [
            Server(c, model, args.port_base + 10 * i, args)
            for i, c in enumerate(cfgs)
            # batch-only servers start only for models that have batching cells
            if not c.get("batch_only") or any(b.startswith(f"{model}/") for b in args.batch_cells)
            if not c.get("sklearn_only") or MODEL_RUNTIME.get(model, "sklearn") == "sklearn"
        ]
        for s in servers:
            os.makedirs(s.run_dir, exist_ok=True)
        session(servers, model, args, results)
    results["meta"]["loadavg_end"] = loadavg()
    if any(s.startswith("modelport") for s in args.servers):
        results["correctness"] = correctness(args)
    results["table"] = summarize(results, args)
    results["targets"] = targets(results)
    report = markdown(results, args)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out_dir, "report.md"), "w") as f:
        f.write(report)
    print(report)
    log(f"wrote {args.out_dir}/results.json and report.md")
    if args.update_readme:
        update_readme(report)
    bad = [f"{k} {s}" for k, c in results["checks"].items() for s, x in c.items() if not x["ok"]]
    bad += results["failed"] + [
        f"{r['server']} {r['model']} {r['scenario']} c{r['conc']}: wrk errors"
        for r in results["runs"]
        if r["errors"]
    ]
    if bad:
        log("FAILURES (not timing): " + "; ".join(bad)[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
