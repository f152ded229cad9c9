"""Process entry point: flags -> config -> models -> uvicorn, with graceful shutdown.

`main(SKLearnPredictor)` is all a runtime's `__main__` does. With `--workers N` the parent
binds the port and starts N spawned worker processes that each load their own models after
start (never inherited through fork: the LightGBM/OpenMP fork hazard), and share metrics
through prometheus_client's multiprocess directory.

SIGTERM: readiness turns false at once, liveness stays true, requests in flight finish
(up to `--graceful_shutdown_timeout` seconds), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

from modelport.base import logs
from modelport.base.app import create_app
from modelport.base.config import ServerConfig, parse_config
from modelport.base.dataplane import DataPlane
from modelport.base.errors import ModelportError
from modelport.base.model import Predictor
from modelport.base.repository import ModelRepository

log = logging.getLogger("modelport.server")
_URI_SCHEMES = ("s3://", "gs://", "http://", "https://", "pvc://", "file://")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that also serves gRPC, and whose first SIGTERM/SIGINT drains both
    transports instead of stopping at once."""

    def __init__(self, config: uvicorn.Config, state: DataPlane, grace: float) -> None:
        super().__init__(config)
        self.state = state
        self.grace = grace
        self.deadline = 0.0
        self.grpc: Any = None
        self.failed = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.state.config.enable_grpc and not self.should_exit:
            from modelport.base.grpc.server import start_grpc

            try:
                self.grpc = await start_grpc(self.state)
            except ModelportError as exc:
                log.error("grpc failed to start", extra={"error": exc.message})
                print(f"error: {exc.message}", file=sys.stderr)
                self.failed = True
                self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:  # in-flight calls were drained with the HTTP ones
            await self.grpc.stop(grace=max(self.deadline - time.monotonic(), 0.5))
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining:  # a second signal: stop now
            self.should_exit = True
            self.force_exit = True
            return
        self.state.draining = True
        self.deadline = time.monotonic() + self.grace
        log.info("draining", extra={"in_flight": self.state.in_flight, "grace_s": self.grace})

    async def on_tick(self, counter: int) -> bool:
        drained = self.state.in_flight == 0 or time.monotonic() >= self.deadline
        if self.state.draining and drained:
            self.should_exit = True
        return await super().on_tick(counter)


def resolve_model_dir(model_dir: str) -> str:
    """A storage URI as `--model_dir` is downloaded first (KServe's behaviour)."""
    if not model_dir.startswith(_URI_SCHEMES):
        return model_dir
    try:
        from modelport.storage.download import download
        from modelport.storage.errors import StorageError
    except ImportError as exc:
        raise ModelportError(
            f"--model_dir {model_dir} is a URI but modelport[storage] is not installed ({exc})"
        ) from None
    dest = tempfile.mkdtemp(prefix="modelport-model-")
    try:
        return str(download(model_dir, dest))
    except StorageError as exc:  # one line, secrets already redacted; never a traceback
        shutil.rmtree(dest, ignore_errors=True)  # our own temporary directory
        raise ModelportError(f"cannot download --model_dir: {exc.kind}: {exc}") from None


def serve(config: ServerConfig, runtime: type[Predictor], sock: socket.socket | None = None) -> int:
    """Load the models, then serve until drained. Returns the process exit code."""
    repository = ModelRepository(config, runtime)
    try:
        repository.discover()
        asyncio.run(repository.load_all())
    except ModelportError as exc:
        log.error("model failed to load", extra={"error": exc.message})
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    app = create_app(config, repository)
    uvicorn_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.http_port,
        log_config=logs.uvicorn_log_config(),
        access_log=False,
        timeout_graceful_shutdown=int(config.graceful_shutdown_timeout) or None,
        server_header=False,
    )
    server = DrainingServer(uvicorn_config, app.state.dataplane, config.graceful_shutdown_timeout)
    server.run(sockets=[sock] if sock is not None else None)
    return 1 if server.failed else 0


def _worker(config: ServerConfig, runtime: type[Predictor], sock: socket.socket) -> None:
    logs.configure(config.log_level, config.access_log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM
    sys.exit(serve(config, runtime, sock))


def supervise(config: ServerConfig, runtime: type[Predictor]) -> int:
    """Run `config.workers` spawned workers on one bound socket; exit when they all do."""
    metrics_dir = os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="modelport-metrics-")
    )
    for stale in os.listdir(metrics_dir):
        os.remove(os.path.join(metrics_dir, stale))
    sock = socket.create_server((config.host, config.http_port), reuse_port=False, backlog=2048)
    sock.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(config, runtime, sock), name=f"worker-{i}")
        for i in range(config.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(sig: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    from prometheus_client import multiprocess

    code = 0
    remaining = list(workers)
    while remaining:
        for worker in list(remaining):
            worker.join(timeout=0.2)
            if worker.exitcode is None:
                continue
            remaining.remove(worker)
            if worker.pid is not None:
                multiprocess.mark_process_dead(worker.pid)
            if worker.exitcode != 0:
                code = 1
                log.error("worker exited", extra={"worker": worker.name, "code": worker.exitcode})
                forward(signal.SIGTERM, None)
    sock.close()
    return code


def main(runtime: type[Predictor], argv: Sequence[str] | None = None) -> None:
    """The CLI of every runtime: `python -m modelport.runtimes.<framework> --model_dir ...`."""
    config = parse_config(
        argv, f"python -m modelport.runtimes.{runtime.runtime}", runtime.add_arguments
    )
    logs.configure(config.log_level, config.access_log)
    try:
        model_dir = resolve_model_dir(config.model_dir)
    except ModelportError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    if model_dir != config.model_dir:
        config = dataclasses.replace(config, model_dir=model_dir)
    if config.workers > 1:
        sys.exit(supervise(config, runtime))
    sys.exit(serve(config, runtime))
