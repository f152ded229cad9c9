"""Profile modelport under wrk load with py-spy; print its hottest frames.

    python3 bench/profile.py --model iris --scenario v2-1 --conc 16 --duration 10
    python3 bench/profile.py --model rf20 --scenario v2-1 --conc 64 -- --max_batch_size=64

Starts modelport's sklearn runtime pinned to --server-cpu, drives it with wrk (and runs
py-spy) on --wrk-cpu, samples it with `py-spy record --format raw` (collapsed stacks),
and prints the top frames by own time and by total time (file:line). Needs py-spy in
.venv (`.venv/bin/pip install py-spy`) and the fixtures (`bash bench/run.sh` once).
Writes the collapsed stacks and a speedscope file to --out-dir.
"""

import argparse
import collections
import os
import subprocess
import sys
import time

import bench

HERE = os.path.dirname(os.path.abspath(__file__))


def top(collapsed, n):
    own, total, samples = collections.Counter(), collections.Counter(), 0
    with open(collapsed) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count)
            samples += count
            frames = stack.split(";")
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    files = collections.Counter()
    for frame, count in own.items():
        files[frame.rpartition("(")[2].rpartition(":")[0] or frame] += count
    out = [f"{samples} samples"]
    sections = (("own time", own), ("own time per file", files))
    sections += (("total time (frame on the stack; coroutine stacks start at their await)", total),)
    for title, counter in sections:
        out.append(f"\n## top {n} by {title}")
        for frame, count in counter.most_common(n):
            out.append(f"{100 * count / samples:5.1f}%  {frame}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="iris")
    ap.add_argument("--scenario", default="v2-1", choices=bench.SCENARIOS)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread (default: only the one holding the GIL, i.e. the CPU work)",
    )
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results", "profile"))
    ap.add_argument("server_args", nargs="*", help="extra modelport flags, after --")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    bargs = bench.parse_args(["--servers", "modelport", "--out-dir", args.out_dir])
    help_run = [bargs.modelport_python, "-m", "modelport.runtimes.sklearn", "--help"]
    bargs.modelport_help = subprocess.run(help_run, capture_output=True, text=True).stdout
    cfg = next(c for c in bench.server_table(bargs) if c["name"] == "modelport")
    cfg = dict(cfg, cmd=lambda m, p, r, base=cfg["cmd"]: (base(m, p, r)[0] + args.server_args, {}))
    server = bench.Server(cfg, args.model, bargs.port_base + 90, bargs)
    os.makedirs(server.run_dir, exist_ok=True)
    pyspy = os.path.join(os.path.dirname(bargs.modelport_python), "py-spy")
    tag = f"{args.model}-{args.scenario}-c{args.conc}"
    raw = os.path.join(args.out_dir, f"{tag}.collapsed")
    try:
        print(f"modelport ready in {server.start():.2f} s", file=sys.stderr)
        if not bench.check(server, [args.scenario])[args.scenario]["ok"]:
            sys.exit("wrong answer; not profiling")
        bench.wrk(bargs, server, args.scenario, 4, 2)  # warm-up
        record = ["taskset", "-c", bargs.wrk_cpu, pyspy, "record", "--pid", str(server.proc.pid)]
        record += ["--rate", str(args.rate), "--duration", str(args.duration), "--nonblocking"]
        record += ["--format", "raw", "--output", raw] + (["--native"] if args.native else [])
        record += [] if args.all_threads else ["--gil"]
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        r = bench.wrk(bargs, server, args.scenario, args.conc, args.duration)
        spy.wait(timeout=60)
        print(
            f"under py-spy: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}"
        )
    finally:
        server.stop()
    report = top(raw, args.top)
    with open(os.path.join(args.out_dir, f"{tag}.top.txt"), "w") as f:
        f.write(report + "\n")
    print(report)
    print(f"\ncollapsed stacks: {raw}", file=sys.stderr)


if __name__ == "__main__":
    main()
