"""`--workers N`: the parent process that starts, watches and replaces spawned workers.

The parent binds the port once and starts N spawned workers on it (never forked: the
LightGBM/OpenMP fork hazard); each loads its own models. A worker that dies (OOM killer,
a segfault in a native library) is replaced after a backoff (0.5 s, doubling, at most
10 s) while the others keep serving, so only the dead worker's in-flight requests fail.
Each death is logged with its exit code or signal and each replacement is counted in
`modelport_worker_restarts_total`. More than `--max_worker_restarts` deaths within 60 s is
a crash loop: the server stops and exits 1. A first-generation worker whose models fail
to load stops the server at once (as with one process): a replacement would fail alike.

Metrics: prometheus_client's multiprocess mode aggregates every `<kind>_<pid>.db` file in
PROMETHEUS_MULTIPROC_DIR. Without a user-set directory the parent makes (and at exit
removes) a private one. In a user-set directory it removes only files named as
prometheus_client names them whose process is gone (stale, from an earlier run) and, at
exit, those of its own processes; every other file is left alone. The restart counter is
written by the parent into that directory, so `/metrics` of any worker shows it.

Signals: the first SIGTERM/SIGINT is forwarded to the workers, which drain; a second one
is forwarded too (workers then stop at once, quietly). Workers still running
`graceful_shutdown_timeout + 10` seconds after the first signal are killed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from modelport.base.config import ServerConfig
from modelport.base.model import Predictor

log = logging.getLogger("modelport.server")

WORKER_BOOT_FAILED = 3  # exit code of a worker whose models failed to load
STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot bind (the single-process server's)
CRASH_WINDOW = 60.0  # seconds over which worker deaths count towards a crash loop
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
_METRIC_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")


def describe_exit(exitcode: int | None) -> dict[str, Any]:
    """`{"exit_code": n}` or `{"signal": "SIGKILL"}`: how a process ended, for the log."""
    if exitcode is not None and exitcode < 0:
        try:
            return {"signal": signal.Signals(-exitcode).name}
        except ValueError:
            return {"signal": -exitcode}
    return {"exit_code": exitcode}


@dataclass
class Slot:
    """One worker position: its current process, or when its replacement is due."""

    index: int
    process: BaseProcess | None = None
    generation: int = 0
    restart_at: float = 0.0


@dataclass
class MetricsDir:
    """PROMETHEUS_MULTIPROC_DIR: ours (a temp dir) or the user's (touched only by pattern)."""

    path: str
    owned: bool
    pids: set[int] = field(default_factory=set)

    @classmethod
    def prepare(cls) -> MetricsDir:
        user = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not user:
            path = tempfile.mkdtemp(prefix="modelport-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
            return cls(path, owned=True, pids={os.getpid()})
        os.makedirs(user, exist_ok=True)
        found = cls(user, owned=False, pids={os.getpid()})
        found.remove(lambda pid: pid == os.getpid() or not pid_alive(pid))
        return found

    def remove(self, matches: Any) -> None:
        """Delete prometheus_client's files in the directory whose pid `matches`."""
        for name in os.listdir(self.path):
            found = _METRIC_FILE.match(name)
            if found and matches(int(found[1])):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.path, name))

    def cleanup(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.remove(lambda pid: pid in self.pids)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _restart_counter() -> Any:
    """The parent's restart counter, written to the multiprocess directory.

    prometheus_client picks its value class when first imported, which in this process
    happened before PROMETHEUS_MULTIPROC_DIR was set; the parent serves no metrics itself,
    so it switches to the file-backed class here, for the one metric it writes.
    """
    from prometheus_client import Counter, values

    values.ValueClass = values.MultiProcessValue()
    return Counter(
        "modelport_worker_restarts",
        "worker processes replaced after they died (--workers N)",
        registry=None,
    )


class Supervisor:
    """Runs `config.workers` spawned workers on one socket; see the module docstring."""

    def __init__(self, config: ServerConfig, runtime: type[Predictor], target: Any) -> None:
        self.config = config
        self.runtime = runtime
        self.target = target  # the worker: target(config, runtime, sock, parent_pid)
        self.context = multiprocessing.get_context("spawn")
        self.slots = [Slot(i) for i in range(config.workers)]
        self.deaths: collections.deque[float] = collections.deque()
        self.stopping = False
        self.signals = 0
        self.stop_deadline = 0.0
        self.code = 0
        self.sock: socket.socket | None = None

    def run(self) -> int:
        from prometheus_client import multiprocess

        address = (self.config.host, self.config.http_port)
        try:  # before anything that needs cleaning up
            self.sock = socket.create_server(address, reuse_port=False, backlog=2048)
        except OSError as exc:  # one line, as uvicorn logs it for a single process
            reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
            log.error(
                "[Errno %s] error while attempting to bind on address %r: %s",
                exc.errno,
                address,
                reason,
            )
            return STARTUP_FAILURE
        self.sock.set_inheritable(True)
        metrics_dir = MetricsDir.prepare()
        self.restarts = _restart_counter()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for slot in self.slots:
                self._start(slot)
                metrics_dir.pids.add(slot.process.pid or 0)  # type: ignore[union-attr]
            while any(slot.process is not None for slot in self.slots) or not self.stopping:
                self._wait()
                now = time.monotonic()
                for slot in self.slots:
                    process = slot.process
                    if process is not None and process.exitcode is not None:
                        slot.process = None
                        if process.pid is not None:
                            multiprocess.mark_process_dead(process.pid)
                        self._died(slot, process, now)
                    elif process is None and not self.stopping and now >= slot.restart_at:
                        self._start(slot)
                        self.restarts.inc()
                        metrics_dir.pids.add(slot.process.pid or 0)  # type: ignore[union-attr]
                if self.stopping and self.stop_deadline and now >= self.stop_deadline:
                    self._kill_remaining()
        finally:
            self.sock.close()
            metrics_dir.cleanup()
        return self.code

    def _start(self, slot: Slot) -> None:
        assert self.sock is not None
        slot.process = self.context.Process(
            target=self.target,
            args=(self.config, self.runtime, self.sock, os.getpid()),
            name=f"worker-{slot.index}",
        )
        slot.process.start()
        slot.generation += 1
        if slot.generation > 1:
            log.info("worker restarted", extra={"worker": slot.index, "pid": slot.process.pid})

    def _wait(self) -> None:
        """Sleep until a worker exits or 0.2 s pass (signals are handled meanwhile)."""
        sentinels = [slot.process.sentinel for slot in self.slots if slot.process is not None]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout=0.2)
        else:
            time.sleep(0.1)

    def _died(self, slot: Slot, process: BaseProcess, now: float) -> None:
        how = describe_exit(process.exitcode)
        fields = {"worker": slot.index, "pid": process.pid, **how}
        if self.stopping:
            # Stopped by our SIGTERM before it served: 128+SIGTERM while loading models
            # (quiet handler), -SIGTERM before even that (Python's default action).
            stopped = (0, 128 + signal.SIGTERM, -signal.SIGTERM)
            if process.exitcode not in stopped and self.code == 0:
                self.code = 1
            log.info("worker exited", extra=fields)
            return
        if process.exitcode == WORKER_BOOT_FAILED and slot.generation == 1:
            log.error("worker failed to load its models: stopping the server", extra=fields)
            self._stop(1)
            return
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > CRASH_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > self.config.max_worker_restarts:
            log.error(
                "worker crash loop: stopping the server",
                extra={**fields, "deaths": len(self.deaths), "window_s": CRASH_WINDOW},
            )
            self._stop(1)
            return
        delay = min(BACKOFF_FIRST * 2 ** (len(self.deaths) - 1), BACKOFF_MAX)
        slot.restart_at = now + delay
        log.error("worker died: replacing it", extra={**fields, "restart_in_s": delay})

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            self.code = 128 + sig
        self._stop(self.code)

    def _stop(self, code: int) -> None:
        """Forward SIGTERM to every live worker (each signal again: a second one forces)."""
        self.code = self.code or code
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.config.graceful_shutdown_timeout + 10
        for slot in self.slots:
            process = slot.process
            if process is not None and process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _kill_remaining(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.exitcode is None:
                log.error("worker did not stop in time: killing it", extra={"pid": process.pid})
                process.kill()
        self.stop_deadline = 0.0
        self.code = self.code or 1
