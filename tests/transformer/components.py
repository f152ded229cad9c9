"""Start a component (transformer) process from any module, as `start_server` does for a
runtime: `python -m <module> --http_port P --host 127.0.0.1 ...`, waiting for liveness."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.servers import ServerProcess, free_port


def start_component(
    module_or_script: str, *flags: str, wait_path: str = "/v2/health/live", timeout: float = 60.0
) -> ServerProcess:
    """A module name (`modelport.runtimes.transformer`) or a script path (`.py`)."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the server process owns it
        prefix="modelport-component-", suffix=".log", delete=False
    )
    target = [module_or_script] if module_or_script.endswith(".py") else ["-m", module_or_script]
    process = subprocess.Popen(
        [sys.executable, *target, f"--http_port={port}", "--host=127.0.0.1", *flags],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    server = ServerProcess(process, port, Path(log_file.name))
    server.wait_ready(timeout, path=wait_path)
    return server


def start_transformer(predictor_host: str, *flags: str, **kwargs: object) -> ServerProcess:
    """The pass-through transformer in front of `predictor_host`."""
    return start_component(
        "modelport.runtimes.transformer",
        f"--predictor_host={predictor_host}",
        *flags,
        **kwargs,  # type: ignore[arg-type]
    )
