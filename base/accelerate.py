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

onnxruntime is imported only here, inside functions: the server starts without it.
"""

from __future__ import annotations

import bisect
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger("modelport.accelerate")

SAMPLE_FILE = "accelerate-sample.npy"
DEFAULT_TOLERANCE = 1e-5
# Batch sizes timed during verification; a request of n rows uses the engine only where it
# was faster at the measured sizes on both sides of n.
SIZES = (1, 8, 64, 512)
# ONNX Runtime must beat native by this factor to serve a size (timing noise margin).
MARGIN = 0.9
PROBE_ROWS = 2048
# Scores closer than this are a tie in a float32 graph (see `first_max`).
TIE_WINDOW = 1e-6
# Seconds of timing per batch size (at least two alternating runs each).
TIME_BUDGET = 0.2
# Longest wait for the server to accept requests before converting anyway (seconds).
STARTUP_WAIT = 60.0
VERDICT_VERSION = 1  # bump when the verdict format or the verification changes

#: ONNX outputs (in graph order) -> one of the runtime's outputs.
OutputMap = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(slots=True)
class Conversion:
    """What a runtime contributes: how to build the graph and what its outputs mean.

    `convert` runs only when the cache has no graph for this model. `float32_only`: the
    native model computes on float64 inputs but the graph on float32, so only requests
    whose values are exactly float32 take the graph.
    """

    convert: Callable[[], bytes]
    outputs: dict[str, OutputMap]
    input_dtype: type[np.floating[Any]] = np.float32
    float32_only: bool = False
    converter: str = ""  # the converter package, whose version joins the cache key


class Engine:
    """An ONNX Runtime session answering some outputs, cast back to the native dtypes."""

    def __init__(self, graph: bytes, conversion: Conversion, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # converters declare label shapes ORT warns about
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.conversion = conversion
        self.dtypes: dict[str, np.dtype[Any]] = {}
        self.flat: set[str] = set()  # outputs the native model answers as 1-D
        self.sizes: list[int] = []
        self.wins: list[bool] = []

    def serves(self, rows: int) -> bool:
        """Whether the graph was faster than native around this batch size."""
        sizes, wins = self.sizes, self.wins
        if not sizes:
            return False
        at = bisect.bisect_left(sizes, rows)
        if at == len(sizes):
            return wins[-1]
        if sizes[at] == rows or at == 0:
            return wins[at]
        return wins[at - 1] and wins[at]

    def run(self, features: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        results = self.session.run(
            None, {self.input: features.astype(self.conversion.input_dtype, copy=False)}
        )
        answers = []
        for name in names:
            value = np.asarray(self.conversion.outputs[name](results))
            if name in self.flat and value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            answers.append(value.astype(self.dtypes[name], copy=False))
        return answers

    def eligible(self, features: Any, any_size: bool = False) -> np.ndarray | None:
        """The features as the graph takes them, or None when native must answer them."""
        if not isinstance(features, np.ndarray) or features.ndim != 2:
            return None
        kind = features.dtype.kind
        if kind not in "fiu" or not (any_size or self.serves(len(features))):
            return None
        if kind == "f" and not np.isfinite(features).all():
            return None  # missing values: the native model's own rules
        if self.conversion.float32_only and features.dtype != np.float32:
            narrowed = features.astype(np.float32)
            if not np.array_equal(narrowed, features):
                return None
            return narrowed
        return features


@dataclass(slots=True)
class Verdict:
    """The outcome of one verification, cached as JSON next to the graph."""

    ok: bool
    reason: str
    dtypes: dict[str, str]
    flat: list[str]
    sizes: list[int]
    wins: list[bool]
    native_us: list[float]
    engine_us: list[float]
    probes: int = 0
    max_diff: float = 0.0

    def apply(self, engine: Engine) -> None:
        engine.dtypes = {name: np.dtype(text) for name, text in self.dtypes.items()}
        engine.flat = set(self.flat)
        engine.sizes, engine.wins = list(self.sizes), list(self.wins)

    def describe(self) -> str:
        """Which batch sizes the graph serves, in words."""
        served = [size for size, win in zip(self.sizes, self.wins, strict=True) if win]
        if not served:
            return "native (onnxruntime was not faster at any measured batch size)"
        timings = ", ".join(
            f"{size} rows {native:.0f}->{engine:.0f} us"
            for size, native, engine in zip(self.sizes, self.native_us, self.engine_us, strict=True)
        )
        others = [size for size, win in zip(self.sizes, self.wins, strict=True) if not win]
        native = f"; native at {others}" if others else ""
        return f"onnxruntime at batch sizes {served}{native} ({timings})"


def compare(native: np.ndarray, engine: np.ndarray, tolerance: float) -> tuple[str, float]:
    """'' when the engine's answer matches (labels exactly, scores within the tolerance),
    else what differs; and the largest score difference."""
    if native.shape != engine.shape:
        return f"shape {engine.shape} instead of {native.shape}", 0.0
    if native.dtype.kind not in "fc":
        same = native == engine.astype(native.dtype, copy=False)
        if not np.all(same):
            return f"{int(np.size(same) - np.count_nonzero(same))} different labels", 0.0
        return "", 0.0
    expected = native.astype(np.float64)
    got = engine.astype(np.float64)
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    if not np.allclose(got, expected, rtol=tolerance, atol=tolerance, equal_nan=True):
        return f"scores differ by up to {diff:.3g} (tolerance {tolerance:g})", diff
    return "", diff


def first_max(scores: np.ndarray, window: float = TIE_WINDOW) -> np.ndarray:
    """Per row, the first column within `window` of the row's largest score.

    A native model in float64 that scores two classes exactly alike picks the first;
    the graph's float32 sums put one of them a rounding error ahead, either one.
    """
    scores = np.asarray(scores)
    return np.argmax(scores >= scores.max(axis=1, keepdims=True) - window, axis=1)


def either_side(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each split threshold the nearest float32 values strictly below and above it,
    never on it: where a graph's rounding of the threshold would show."""
    t = np.asarray(thresholds, dtype=np.float64)
    t = t[np.isfinite(t) & (np.abs(t) < np.finfo(np.float32).max / 2)]
    near = t.astype(np.float32)
    below = np.where(near.astype(np.float64) < t, near, np.nextafter(near, np.float32(-np.inf)))
    above = np.where(near.astype(np.float64) > t, near, np.nextafter(near, np.float32(np.inf)))
    return below, above


def exact_leq_thresholds(graph: bytes, splits: dict[int, list[float]]) -> bytes:
    """Make a graph's float32 `x <= t` tests exact for float32 inputs of a float64 model.

    Converters round each float64 threshold t to the nearest float32, which sends a value
    just above t the wrong way when the rounding went up. For float32 x, `x <= t` holds
    exactly when `x <= t32` with t32 the largest float32 not above t: write those instead
    (`splits`: the model's own thresholds per feature). Thresholds two originals share
    ambiguously stay as they are, for the verification to judge.
    """
    import onnx

    fixed: dict[tuple[int, float], float | None] = {}
    for feature, values in splits.items():
        for value in values:
            near = float(np.float32(value))
            down = near if near <= value else float(np.nextafter(np.float32(near), -np.inf))
            key = (feature, near)
            fixed[key] = down if fixed.get(key, down) == down else None
    model = onnx.load_from_string(graph)
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or not node.op_type.startswith("TreeEnsemble"):
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if not {"nodes_modes", "nodes_featureids", "nodes_values"} <= attributes.keys():
            continue
        modes = attributes["nodes_modes"].strings
        features = attributes["nodes_featureids"].ints
        values = attributes["nodes_values"].floats
        for index, (mode, feature) in enumerate(zip(modes, features, strict=True)):
            if mode == b"BRANCH_LEQ":
                down = fixed.get((int(feature), float(np.float32(values[index]))))
                if down is not None:
                    values[index] = down
    return bytes(model.SerializeToString())


def threshold_probes(
    splits: dict[int, list[float]], n_features: int, rows: int = PROBE_ROWS, seed: int = 0
) -> np.ndarray:
    """Rows whose every value lies just either side of one of its feature's thresholds
    (features never split on take 0), plus rows moving one threshold at a time."""
    rng = np.random.default_rng(seed)
    pools = []
    for feature in range(n_features):
        below, above = either_side(np.asarray(splits.get(feature, []), dtype=np.float64))
        pools.append(np.unique(np.concatenate([below, above, np.zeros(1, np.float32)])))
    random = np.stack([rng.choice(pool, rows) for pool in pools], axis=1)
    pairs = [(f, v) for f, pool in enumerate(pools) for v in pool]
    chosen = rng.choice(len(pairs), min(len(pairs), rows), replace=False)
    moved = random[rng.integers(0, rows, len(chosen))].copy()
    for row, index in enumerate(chosen):
        feature, value = pairs[index]
        moved[row, feature] = value
    return np.concatenate([random, moved]).astype(np.float64)


def statistic_probes(
    n_features: int,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    rows: int = PROBE_ROWS,
    seed: int = 0,
) -> np.ndarray:
    """Random rows around the statistics a model holds (a scaler's means and scales), at
    one and three scales, rounded to float32 values as FP32 requests carry them."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(n_features) if mean is None else np.asarray(mean, dtype=np.float64)
    spread = np.ones(n_features) if scale is None else np.asarray(scale, dtype=np.float64)
    noise = rng.standard_normal((rows, n_features))
    noise[rows // 2 :] *= 3.0
    return (centre + spread * noise).astype(np.float32).astype(np.float64)


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
        """Best of a few alternating runs per batch size, native vs graph (default output)."""
        name = self.default_output if self.default_output in engine.dtypes else ""
        sizes = [size for size in SIZES if size <= len(probes)]
        if not name:
            return sizes, [False] * len(sizes), [0.0] * len(sizes), [0.0] * len(sizes)
        native_us, engine_us = [], []
        for size in sizes:
            rows = probes[:size]
            best = [float("inf"), float("inf")]
            budget = time.perf_counter() + TIME_BUDGET
            for repeat in range(50):
                if repeat >= 2 and time.perf_counter() > budget:
                    break
                started = time.perf_counter()
                self.native(name, rows)
                middle = time.perf_counter()
                ready = engine.eligible(rows, any_size=True)
                engine.run(rows if ready is None else ready, [name])
                ended = time.perf_counter()
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
