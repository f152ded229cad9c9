"""Serve a tabular model through ONNX Runtime where a converted graph provably answers the same.

A runtime contributes only a `Conversion` (how to build the ONNX graph and how its outputs
map to the runtime's named outputs) and probe rows made from the model itself. Everything
else lives here, once: the model first serves natively; a background thread converts,
verifies the graph against the native model on the probe rows (plus the optional
`accelerate-sample.npy` shipped in the model directory), times both engines at a few batch
sizes, and switches atomically to ONNX Runtime for the batch sizes where it is faster.
Labels must match exactly and scores within the tolerance; otherwise the model keeps
serving natively and one log line says why. With several workers the graph and verdict
are computed once, under a file lock, in a cache in the temp directory keyed by the model
file's content hash (the model directory may be read-only).

The graph side (Conversion, Engine, probe rows, float32 helpers) is base/onnxgraph.py;
onnxruntime is imported only inside functions there: the server starts without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelport.base import memory
from modelport.base.onnxgraph import Conversion, Engine, Undecided, Verdict, compare

log = logging.getLogger("modelport.accelerate")

SAMPLE_FILE = "accelerate-sample.npy"
DEFAULT_TOLERANCE = 1e-5
# Batch sizes timed during verification; a request of n rows uses the engine only where it
# was faster at the measured sizes on both sides of n.
SIZES = (1, 8, 64, 512, 4096)
# ONNX Runtime must beat native by this factor to serve a size (timing noise margin).
MARGIN = 0.9
# Seconds of timing per batch size, and the fewest alternating runs each (best of).
TIME_BUDGET = 0.2
MIN_RUNS = 5
# Longest wait for the server to accept requests before converting anyway (seconds).
STARTUP_WAIT = 60.0
VERDICT_VERSION = 5  # bump when the verdict format or the verification changes


class Accelerator:
    """The acceleration state of one predictor: native until a verified engine takes over."""

    def __init__(
        self,
        name: str,
        model_file: Path,
        conversion: Conversion,
        probes: Callable[[], np.ndarray],
        native: Callable[[str, np.ndarray], np.ndarray],
        default_output: str,
        parameters: dict[str, Any],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.model_file = model_file
        self.conversion = conversion
        self.probes = probes
        self.native = native
        self.default_output = default_output
        self.tolerance = float(parameters.get("accelerate_tolerance", DEFAULT_TOLERANCE))
        self.threads = int(parameters.get("nthread") or 1)
        self.engine: Engine | None = None
        self.status = "pending"
        self.cancelled = False
        self.failed_once = False
        self.thread: threading.Thread | None = None
        self.verdict: Verdict | None = None
        self.on_change = on_change

    # --- serving -----------------------------------------------------------------------

    def answer(self, features: Any, names: Sequence[str]) -> list[np.ndarray] | None:
        """The outputs from the graph, or None when native must answer this request."""
        engine = self.engine
        if engine is None or any(name not in engine.dtypes for name in names):
            return None
        rows = engine.eligible(features)
        if rows is None:
            return None
        try:
            return engine.run(rows, names)
        except Undecided:  # a label too close to call in float32: the native model picks it
            return None
        except Exception as exc:  # the native model answers (or rejects) it instead
            if not self.failed_once:
                self.failed_once = True
                log.warning(
                    "onnxruntime failed on a request; native answers it",
                    extra={"model": self.name, "error": f"{type(exc).__name__}: {exc}"},
                )
            return None

    @property
    def engine_name(self) -> str:
        engine = self.engine
        return "onnxruntime" if engine is not None and any(engine.wins) else "native"

    # --- background conversion ------------------------------------------------------------

    def serves_all(self) -> bool:
        """Whether the graph serves every measured batch size (native serves none)."""
        engine = self.engine
        return engine is not None and all(engine.wins)

    def start(self, after: threading.Event | None = None) -> None:
        """Convert and verify in a daemon thread once `after` is set (the server accepts
        requests, so start-up never waits for it); the model serves natively meanwhile."""

        def work() -> None:
            if after is not None:
                after.wait(STARTUP_WAIT)
            self.run()

        self.thread = threading.Thread(target=work, name=f"accelerate-{self.name}", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        """The model is unloading: never switch it."""
        self.cancelled = True
        self.engine = None

    def run(self) -> None:
        """Convert (or read the cache), verify, time, then switch; never raises."""
        if self.cancelled:
            return
        _lower_priority()
        try:
            engine, verdict, cached = self._prepare()
        except Exception as exc:
            self._native(f"{type(exc).__name__}: {exc}")
            return
        finally:
            # The converter's garbage goes back to the OS, and what stays (the converter's
            # modules) leaves the collector's scans: RSS and per-request GC pauses as near
            # the native server's as the graph allows.
            memory.settle()
        if self.cancelled:
            return
        self.verdict = verdict
        if not verdict.ok:
            self._native(verdict.reason, cached)
            return
        if any(verdict.wins):
            self.engine = engine  # one assignment: requests see the old or the new engine
        self.status = verdict.describe()  # after the switch: a verdict means it is done
        if self.on_change is not None:
            self.on_change()
        log.info(
            "accelerated" if any(verdict.wins) else "serving natively",
            extra={
                "model": self.name,
                "engine": self.engine_name,
                "detail": self.status,
                "probes": verdict.probes,
                "max_score_diff": verdict.max_diff,
                "verdict": "from cache" if cached else "converted and verified",
            },
        )

    def _native(self, reason: str, cached: bool = False) -> None:
        self.status = f"native: {reason}"
        log.warning(
            "serving natively",
            extra={
                "model": self.name,
                "reason": reason,
                "verdict": "from cache" if cached else "converted and verified",
            },
        )

    def _prepare(self) -> tuple[Engine | None, Verdict, bool]:
        """The engine and its verdict, from the cache or made here under the file lock."""
        self.status = "converting"
        sample = self.model_file.parent / SAMPLE_FILE
        key = self._key(sample)
        directory = cache_dir()
        graph_path, verdict_path = directory / f"{key}.onnx", directory / f"{key}.json"
        with _locked(directory / f"{key}.lock"):
            if verdict_path.is_file():
                verdict = Verdict(**orjson.loads(verdict_path.read_bytes()))
                if not verdict.ok:
                    return None, verdict, True
                engine = Engine(graph_path.read_bytes(), self.conversion, self.threads)
                verdict.apply(engine)
                return engine, verdict, True
            try:
                graph = self.conversion.convert()
                engine = Engine(graph, self.conversion, self.threads)
            except Exception as exc:
                verdict = _failed(f"cannot convert: {type(exc).__name__}: {exc}".strip())
                _write(verdict_path, orjson.dumps(_fields(verdict)))
                return None, verdict, False
            verdict = self._verify(engine, sample)
            if verdict.ok:
                verdict.apply(engine)
                _write(graph_path, graph)
            _write(verdict_path, orjson.dumps(_fields(verdict)))
            return engine, verdict, False

    def _verify(self, engine: Engine, sample: Path) -> Verdict:
        """Every output the graph offers against native on the probes; then timings."""
        probes = self.probes()
        if sample.is_file():
            user = np.load(sample, allow_pickle=False)
            probes = np.concatenate(
                [probes, np.asarray(user, dtype=np.float64).reshape(len(user), -1)]
            )
        if self.conversion.float32_only:
            probes = probes.astype(np.float32).astype(np.float64)
        dtypes: dict[str, str] = {}
        flat: list[str] = []
        worst = 0.0
        results = engine.session.run(
            None, {engine.input: probes.astype(self.conversion.input_dtype)}
        )
        for name, pick in self.conversion.outputs.items():
            expected = np.asarray(self.native(name, probes))
            got = np.asarray(pick(results))
            if expected.ndim == 1 and got.ndim == 2 and got.shape[1] == 1:
                got = got[:, 0]
                flat.append(name)
            problem, diff = compare(expected, got, self.tolerance)
            worst = max(worst, diff)
            if problem:
                return _failed(f"output '{name}' differs from native on the probe rows: {problem}")
            dtypes[name] = expected.dtype.str
        engine.dtypes = {name: np.dtype(text) for name, text in dtypes.items()}
        engine.flat = set(flat)
        sizes, wins, native_us, engine_us = self._time(engine, probes)
        return Verdict(
            True, "", dtypes, flat, sizes, wins, native_us, engine_us, len(probes), worst
        )

    def _time(
        self, engine: Engine, probes: np.ndarray
    ) -> tuple[list[int], list[bool], list[float], list[float]]:
        """Best of alternating runs per batch size, native vs graph (default output).

        Single-threaded engines are timed in this thread's CPU time, which requests served
        meanwhile (this thread runs at a lower priority) cannot inflate: a verdict taken
        on a busy server is kept for the model's life, so it must not depend on the load.
        """
        name = self.default_output if self.default_output in engine.dtypes else ""
        clock = time.thread_time if self.threads == 1 else time.perf_counter
        sizes = list(SIZES) if len(probes) else []
        if not name:
            return sizes, [False] * len(sizes), [0.0] * len(sizes), [0.0] * len(sizes)
        native_us, engine_us = [], []
        for size in sizes:
            # The probe rows, repeated where there are fewer: what is timed is the cost of
            # a batch of this size (every size is timed, so none is guessed at).
            rows = (
                probes[:size]
                if len(probes) >= size
                else np.resize(probes, (size, *probes.shape[1:]))
            )
            best = [float("inf"), float("inf")]
            budget = time.perf_counter() + TIME_BUDGET
            for repeat in range(50):
                if repeat >= MIN_RUNS and time.perf_counter() > budget:
                    break
                started = clock()
                self.native(name, rows)
                middle = clock()
                ready = engine.eligible(rows, any_size=True)
                try:
                    engine.run(rows if ready is None else ready, [name])
                except Undecided:  # such a batch goes native: that is what it costs
                    self.native(name, rows)
                ended = clock()
                best = [min(best[0], middle - started), min(best[1], ended - middle)]
            native_us.append(round(best[0] * 1e6, 1))
            engine_us.append(round(best[1] * 1e6, 1))
        wins = [e < n * MARGIN for n, e in zip(native_us, engine_us, strict=True)]
        return sizes, wins, native_us, engine_us

    def _key(self, sample: Path) -> str:
        """Model bytes, sample bytes, library versions and verification settings."""
        digest = hashlib.sha256()
        with self.model_file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if sample.is_file():
            digest.update(sample.read_bytes())
        packages = ("modelport", "onnxruntime", "numpy", self.conversion.converter)
        versions = [_version(package) for package in packages]
        digest.update(
            orjson.dumps(
                [VERDICT_VERSION, versions, self.tolerance, self.threads, self.default_output]
            )
        )
        return digest.hexdigest()[:32]


def cache_dir() -> Path:
    """Where graphs and verdicts are kept: the temp dir, shared by a server's workers."""
    directory = Path(tempfile.gettempdir()) / "modelport-accelerate"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    """An exclusive lock on `path` across processes (one worker converts, others wait)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a reader sees the whole file or none."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def _failed(reason: str) -> Verdict:
    return Verdict(False, reason, {}, [], [], [], [], [])


def _fields(verdict: Verdict) -> dict[str, Any]:
    return dataclasses.asdict(verdict)


def _version(package: str) -> str:
    if not package:
        return ""
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def _lower_priority() -> None:
    """Background work yields the CPU to requests (Linux: per-thread nice value)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
