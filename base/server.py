"""Process entry point: flags -> config -> models -> uvicorn, with graceful shutdown.

`main(SKLearnPredictor)` is all a runtime's `__main__` does. With `--workers N` the parent
supervises N spawned worker processes (see `supervisor.py`).

SIGTERM: readiness turns false at once, liveness stays true, requests in flight finish
(up to `--graceful_shutdown_timeout` seconds), then the process exits 0. A second SIGTERM
or SIGINT stops at once, quietly (one log line, no traceback), with exit code 128+signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

import uvicorn

from modelport.base import connections, logs, memory
from modelport.base.app import create_app
from modelport.base.config import ServerConfig, parse_config
from modelport.base.dataplane import DataPlane
from modelport.base.errors import ModelportError
from modelport.base.model import Predictor
from modelport.base.repository import ModelRepository
from modelport.base.supervisor import WORKER_BOOT_FAILED, Supervisor

log = logging.getLogger("modelport.server")
_URI_SCHEMES = ("s3://", "gs://", "http://", "https://", "pvc://", "file://")
# Folders this process made and removes at exit, however it exits (main's `finally` or
# `stop_now`): the download of a `--model_dir` URI. /tmp is an emptyDir in the manifests,
# which survives container restarts: a crash-looping pod would pile up model copies.
# Spawned workers start with this list empty: the parent downloads, the parent removes.
_owned_dirs: list[str] = []


def _remove_owned_dirs() -> None:
    while _owned_dirs:
        shutil.rmtree(_owned_dirs.pop(), ignore_errors=True)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that also serves gRPC, and whose first SIGTERM/SIGINT drains both
    transports instead of stopping at once."""

    def __init__(
        self, config: uvicorn.Config, state: DataPlane, grace: float, worker: bool = False
    ) -> None:
        super().__init__(config)
        self.state = state
        self.grace = grace
        # A worker of `--workers N` takes its signals from the parent (SIGTERM, forwarded):
        # the terminal's Ctrl-C reaches the whole process group, and taken here too it would
        # make the parent's forwarded SIGTERM a second signal, which stops at once.
        self.worker = worker
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
        # uvicorn waits `timeout_graceful_shutdown` for requests still in flight, counted
        # from now (after a fixed 0.1 s pause), then cancels them: give it only what is left
        # of our drain, so the whole drain ends within the grace (None would wait forever).
        left = self.deadline - time.monotonic() if self.deadline else self.grace
        self.config.timeout_graceful_shutdown = max(left - 0.1, 0.1)  # type: ignore[assignment]
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.worker and sig == signal.SIGINT:
            return
        if self.state.draining:  # a second signal: stop now
            stop_now(sig, frame)
        self.state.begin_drain()
        self.deadline = time.monotonic() + self.grace
        log.info("draining", extra={"in_flight": self.state.in_flight, "grace_s": self.grace})

    async def on_tick(self, counter: int) -> bool:
        drained = self.state.in_flight == 0 or time.monotonic() >= self.deadline
        if self.state.draining and drained:
            self.should_exit = True
        return await super().on_tick(counter)


def stop_now(sig: int, frame: FrameType | None) -> NoReturn:
    """Exit at once on a signal, quietly: no traceback from cancelled requests or threads
    (asyncio teardown would log each cancelled request as an error and wait for threads
    stuck in native code). In-flight requests are dropped: that is what was asked."""
    log.info("stopping now", extra={"signal": signal.Signals(sig).name})
    _remove_owned_dirs()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(128 + sig)


def _quiet_signals() -> None:
    """Before uvicorn installs its draining handlers (model loading) and after it restores
    them (final teardown), a SIGTERM or SIGINT stops the process at once, quietly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, stop_now)


def resolve_model_dir(model_dir: str) -> str:
    """A storage URI as `--model_dir` is downloaded first (KServe's behaviour)."""
    if not model_dir.startswith(_URI_SCHEMES):
        return model_dir
    try:
        from modelport.storage.download import download
        from modelport.storage.errors import RedactFilter, StorageError
    except ImportError as exc:
        raise ModelportError(
            f"--model_dir {model_dir} is a URI but modelport[storage] is not installed ({exc})"
        ) from None
    dest = tempfile.mkdtemp(prefix="modelport-model-")
    _owned_dirs.append(dest)  # removed at exit: nothing needs the copy afterwards
    # The storage clients log what they fetch (httpx: every URL, query string included):
    # the server's log lines pass through the storage CLI's redaction while they download.
    redacting = RedactFilter()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redacting)
    try:
        return str(download(model_dir, dest))
    except StorageError as exc:  # one line, secrets already redacted; never a traceback
        _remove_owned_dirs()  # our own temporary directory
        raise ModelportError(f"cannot download --model_dir: {exc.kind}: {exc}") from None
    finally:
        for handler in handlers:
            handler.removeFilter(redacting)


def serve(
    config: ServerConfig,
    runtime: type[Predictor],
    sock: socket.socket | None = None,
    worker: bool = False,
) -> int:
    """Load the models, then serve until drained. Returns the process exit code."""
    memory.tune_malloc()  # before any thread allocates
    _quiet_signals()
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
        timeout_graceful_shutdown=None,  # set at shutdown: what is left of the drain
        server_header=False,
        # X-Forwarded-* would only rewrite the client address, which nothing here reads:
        # uvicorn's proxy-headers wrapper is skipped on every request.
        proxy_headers=False,
        http=connections.protocol_class(
            config.request_header_timeout or None,
            config.max_connections,
            config.request_body_timeout or None,
            config.max_request_header_size,
        ),
    )
    server = DrainingServer(
        uvicorn_config, app.state.dataplane, config.graceful_shutdown_timeout, worker
    )
    server.run(sockets=[sock] if sock is not None else None)
    return 1 if server.failed else 0


def _die_with_parent(parent_pid: int) -> bool:
    """Ask Linux to send this worker SIGTERM (a drain) when its parent dies, even by
    SIGKILL: an orphaned worker would keep serving and hold the port. Returns whether the
    parent is still there (it may have died before the request took effect)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent_pid


def _worker(
    config: ServerConfig, runtime: type[Predictor], sock: socket.socket, parent_pid: int
) -> None:
    logs.configure(config.log_level, config.access_log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM
    if not _die_with_parent(parent_pid):
        log.info("parent gone before the worker started: exiting", extra={"pid": parent_pid})
        sys.exit(0)
    code = serve(config, runtime, sock, worker=True)
    sys.exit(WORKER_BOOT_FAILED if code == 1 else code)


def supervise(config: ServerConfig, runtime: type[Predictor]) -> int:
    """Run `config.workers` spawned workers on one bound socket, replacing dead ones."""
    return Supervisor(config, runtime, _worker).run()


def main(runtime: type[Predictor], argv: Sequence[str] | None = None) -> None:
    """The CLI of every runtime: `python -m modelport.runtimes.<framework> --model_dir ...`."""
    config = parse_config(
        argv, f"python -m modelport.runtimes.{runtime.runtime}", runtime.add_arguments
    )
    logs.configure(config.log_level, config.access_log)
    _quiet_signals()  # a SIGTERM while downloading still removes the download (stop_now)
    try:
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
    finally:
        _remove_owned_dirs()
