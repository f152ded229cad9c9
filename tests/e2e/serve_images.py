"""Serve an S3 model through the built images, as KServe would (run by tests/e2e/images.sh).

1. A moto S3 server on 127.0.0.1 holds an iris LogisticRegression trained here.
2. The storage image (KServe's storage-initializer contract: `SRC DEST`) copies
   s3://models/iris into a fresh volume, read-only root filesystem, uid 1000.
3. The sklearn image serves the volume with KServe's args, read-only, uid 1000 group 0.
4. V1 and V2 REST, and gRPC where the server has it, answer [1, 1].

Every container runs with `--network=host` and is reached on 127.0.0.1 only. Also printed:
container start to ready against the same server started outside a container (cold start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("ENGINE", "podman")
REGISTRY = os.environ.get("REGISTRY", "modelport")
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
ACCESS, SECRET = "e2e-access", "e2e-secret"
SECURITY = ["--network=host", "--read-only", "--user=1000:0", "--cap-drop=ALL"]
SECURITY += ["--security-opt=no-new-privileges"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ENGINE, *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{ENGINE} {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 90) -> float:
    """Poll until `ready()`; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if ready():
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("moto", http_ok(url + "/moto-api/"), timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def upload_iris(endpoint: str, workdir: Path) -> None:
    import boto3

    x, y = load_iris(return_X_y=True)
    path = workdir / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000, random_state=0).fit(x, y), path)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(path), "models", "iris/model.joblib")


def check_rest(base: str) -> None:
    v1 = httpx.post(f"{base}/v1/models/iris:predict", json={"instances": ROWS}, timeout=10)
    assert v1.status_code == 200 and v1.json()["predictions"] == [1, 1], v1.text
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [v for row in ROWS for v in row],
            }
        ]
    }
    v2 = httpx.post(f"{base}/v2/models/iris/infer", json=body, timeout=10)
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [1, 1], v2.text
    print("e2e-images: V1 and V2 REST answer [1, 1]")


def check_grpc(port: int) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        wait_for("gRPC ready", lambda: _grpc_ready(client), timeout=30)
        tensor = grpcclient.InferInput("input-0", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float32))
        result = client.infer("iris", [tensor])
        assert result.as_numpy("output-0").tolist() == [1, 1]
    finally:
        client.close()
    print("e2e-images: gRPC answers [1, 1]")


def _grpc_ready(client: object) -> bool:
    try:
        return bool(client.is_server_ready())  # type: ignore[attr-defined]
    except Exception:
        return False


def local_cold_start(model_dir: Path) -> float:
    """The same server started outside a container: process start to ready, in seconds."""
    port = free_port()
    args = [sys.executable, "-m", "modelport.runtimes.sklearn", "--model_name=iris"]
    args += [f"--model_dir={model_dir}", f"--http_port={port}", f"--grpc_port={free_port()}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wait_for("local server", http_ok(f"http://127.0.0.1:{port}/v2/health/ready"))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True, help="modelport version (the image tag)")
    parser.add_argument(
        "--grpc",
        choices=("auto", "yes", "no"),
        default="auto",
        help="check gRPC (auto: when this checkout has modelport.base.grpc)",
    )
    args = parser.parse_args()
    grpc = args.grpc == "yes" or (args.grpc == "auto" and (ROOT / "base" / "grpc").is_dir())
    storage = f"{REGISTRY}/storage:{args.version}"
    sklearn = f"{REGISTRY}/sklearn:{args.version}"
    tag = uuid.uuid4().hex[:8]
    volume, name = f"e2e-models-{tag}", f"e2e-sklearn-{tag}"
    http_port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        upload_iris(endpoint, Path(tmp))
        engine("volume", "create", volume)
        try:
            # The storage initializer, as KServe runs it: SRC DEST, credentials in the env.
            pulled = engine(
                "run", "--rm", *SECURITY, "-v", f"{volume}:/mnt/models",
                "-e", f"AWS_ENDPOINT_URL={endpoint}", "-e", f"AWS_ACCESS_KEY_ID={ACCESS}",
                "-e", f"AWS_SECRET_ACCESS_KEY={SECRET}", "-e", "AWS_DEFAULT_REGION=us-east-1",
                storage, "s3://models/iris", "/mnt/models",
            )  # fmt: skip
            print(
                f"e2e-images: storage image filled the volume ({pulled.stderr.count(chr(10))} log lines)"
            )
            started = time.monotonic()
            engine(
                "run", "-d", "--name", name, *SECURITY, "-v", f"{volume}:/mnt/models:ro",
                sklearn, "--model_name=iris", "--model_dir=/mnt/models",
                f"--http_port={http_port}", f"--grpc_port={grpc_port}",
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{http_port}"
                wait_for("the sklearn container", http_ok(f"{base}/v2/health/ready"))
                container = time.monotonic() - started
                check_rest(base)
                if grpc:
                    check_grpc(grpc_port)
                else:
                    print("e2e-images: gRPC not checked (no modelport.base.grpc in this checkout)")
                live = httpx.get(f"{base}/v2/health/live", timeout=5)
                assert live.status_code == 200, live.text
            except BaseException:
                print(engine("logs", name, check=False).stderr[-4000:], file=sys.stderr)
                raise
            finally:
                engine("rm", "-f", "-t", "5", name, check=False)
            local_dir = Path(tmp) / "local"
            local_dir.mkdir()
            shutil.copy(Path(tmp) / "model.joblib", local_dir / "model.joblib")
            local = local_cold_start(local_dir)
            print(
                f"e2e-images: cold start to ready: container {container:.2f}s, "
                f"outside a container {local:.2f}s ({container / local:.2f}x)"
            )
        finally:
            engine("volume", "rm", "-f", volume, check=False)
    print("e2e-images: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
