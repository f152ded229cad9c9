#!/usr/bin/env python3
"""Storage initializer throughput: modelport.storage vs kserve-storage against one moto server.

Not a test. Installs nothing: run it with the project venv (``.venv``, extras storage+test for
boto3 and ``moto[server]``); kserve-storage lives in its own venv because it pins its own deps:

    python3 -m venv /tmp/kserve-storage-venv && /tmp/kserve-storage-venv/bin/pip install kserve-storage
    .venv/bin/python bench/storage_bench.py [--kserve-python /tmp/kserve-storage-venv/bin/python]

Cases: 200 x 1 MB objects under a prefix, and one 200 MB object. Each download runs in a fresh
process (import time excluded, only the download call is timed) into a fresh directory, the
tools alternate, and the median of ``--repeat`` runs is reported as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

MB = 1024 * 1024
SNIPPETS = {
    "modelport": (
        "import json,sys,time\n"
        "from modelport.storage.download import download\n"
        "t=time.perf_counter(); download(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps({'seconds': time.perf_counter()-t}))\n"
    ),
    "kserve-storage": (
        "import json,sys,time,logging\n"
        "from kserve_storage import Storage\n"
        "t=time.perf_counter(); Storage.download(sys.argv[1], out_dir=sys.argv[2])\n"
        "print(json.dumps({'seconds': time.perf_counter()-t}))\n"
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def seed(endpoint: str, small_count: int, small_mb: int, big_mb: int) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="bench")
    blob = os.urandom(small_mb * MB)
    for i in range(small_count):
        s3.put_object(Bucket="bench", Key=f"small/part-{i:04d}.bin", Body=blob)
    with tempfile.NamedTemporaryFile() as f:
        for _ in range(big_mb):
            f.write(os.urandom(MB))
        f.flush()
        s3.upload_file(f.name, "bench", "big/model.bin")


def du(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run_once(
    python: str, tool: str, uri: str, env: dict[str, str], workdir: Path
) -> tuple[float, tuple[int, int]]:
    dest = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=workdir))
    try:
        res = subprocess.run(
            [python, "-c", SNIPPETS[tool], uri, str(dest)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if res.returncode != 0:
            raise SystemExit(f"{tool} failed on {uri}:\n{res.stderr[-2000:]}")
        seconds = float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"])
        return seconds, du(dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kserve-python", default="/tmp/kserve-storage-venv/bin/python")
    ap.add_argument("--small-count", type=int, default=200)
    ap.add_argument("--small-mb", type=int, default=1)
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where downloads land (default: a tmp dir)")
    args = ap.parse_args()

    tools = {"modelport": sys.executable}
    if Path(args.kserve_python).exists():
        tools["kserve-storage"] = args.kserve_python
    else:
        print(f"note: {args.kserve_python} not found, kserve-storage skipped", file=sys.stderr)

    proc, endpoint = start_moto()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="storage-bench-"))
    try:
        t0 = time.perf_counter()
        seed(endpoint, args.small_count, args.small_mb, args.big_mb)
        print(f"seeded moto in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MODELPORT_STORAGE_PROGRESS_INTERVAL": "3600",
        }
        cases = {
            f"{args.small_count} x {args.small_mb} MB": (
                "s3://bench/small",
                args.small_count * args.small_mb * MB,
            ),
            f"1 x {args.big_mb} MB": ("s3://bench/big/model.bin", args.big_mb * MB),
        }
        rows = []
        for case, (uri, nbytes) in cases.items():
            times: dict[str, list[float]] = {t: [] for t in tools}
            for _ in range(args.repeat):
                for tool, python in tools.items():
                    secs, (nfiles, got) = run_once(python, tool, uri, env, workdir)
                    if got != nbytes:
                        raise SystemExit(f"{tool} wrote {got} bytes for {case}, want {nbytes}")
                    times[tool].append(secs)
                    print(f"{case} {tool}: {secs:.2f}s ({nfiles} files)", file=sys.stderr)
            for tool in tools:
                med = statistics.median(times[tool])
                rows.append((case, tool, med, nbytes / MB / med))
        print("| case | tool | seconds (median) | MB/s |")
        print("| --- | --- | ---: | ---: |")
        for case, tool, secs, rate in rows:
            print(f"| {case} | {tool} | {secs:.2f} | {rate:.0f} |")
        if "kserve-storage" in tools:
            print()
            for case in cases:
                mp = next(r[2] for r in rows if r[0] == case and r[1] == "modelport")
                ks = next(r[2] for r in rows if r[0] == case and r[1] == "kserve-storage")
                print(f"- {case}: modelport is {ks / mp:.2f}x the throughput of kserve-storage")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
