"""Start `python -m modelport.runtimes.<runtime>` on a free loopback port and wait for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def triton_infer(
    server: ServerProcess,
    model: str,
    inputs: list[tuple[str, Any, str, bool]],
    outputs: dict[str, bool] | None = None,
    protocol: str = "http",
    **options: Any,
) -> Any:
    """One infer call through Triton's client (the reference client of the binary tensor
    extension, and of OIP gRPC with `protocol="grpc"`): inputs as (name, array, datatype,
    binary), outputs as {name: binary}. gRPC always carries tensors raw."""
    if protocol == "grpc":
        import tritonclient.grpc as client_module

        client: Any = client_module.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    else:
        import tritonclient.http as client_module  # type: ignore[no-redef]

        client = client_module.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    binary_args = (lambda binary: {"binary_data": binary}) if protocol == "http" else (lambda _: {})
    try:
        tensors = []
        for name, array, datatype, binary in inputs:
            tensor = client_module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, **binary_args(binary))
            tensors.append(tensor)
        wanted = None
        if outputs is not None:
            wanted = [
                client_module.InferRequestedOutput(n, **binary_args(b)) for n, b in outputs.items()
            ]
        return client.infer(model, tensors, outputs=wanted, **options)
    finally:
        client.close()


def output_datatype(result: Any, name: str) -> str:
    """An output's datatype from either client's result (HTTP: a dict; gRPC: a message)."""
    output = result.get_output(name)
    return str(output["datatype"] if isinstance(output, dict) else output.datatype)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, every: float = 0.05) -> None:
    """Poll `condition` until it is true: synchronise on a state, never on a sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s: {condition}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its process, base URL and captured log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int = 0
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0, path: str = "/v2/health/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    runtime: str,
    model_dir: str | os.PathLike[str],
    *flags: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 60.0,
) -> ServerProcess:
    """Start a runtime's server process; wait for readiness unless `wait=False`."""
    port = free_port()
    grpc_port = free_port()
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the server process owns it
        prefix=f"modelport-{runtime}-", suffix=".log", delete=False
    )
    command = [
        sys.executable,
        "-m",
        f"modelport.runtimes.{runtime}",
        f"--model_dir={model_dir}",
        f"--http_port={port}",
        f"--grpc_port={grpc_port}",
        "--host=127.0.0.1",
        *flags,
    ]
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(process, port, Path(log_file.name), grpc_port)
    if wait:
        server.wait_ready(timeout)
    return server
