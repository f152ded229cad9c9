"""The converted graph: what a runtime contributes, the ONNX Runtime engine, probe rows.

Shared by the tabular runtimes through base/accelerate.py: a runtime gives a `Conversion`
(how to build the graph, what its outputs mean) and probe rows made from its model
(`threshold_probes` for trees, `statistic_probes` otherwise). The float32 helpers here
(`either_side`, `exact_leq_thresholds`, `first_max`) are where a float32 graph and a
float64 model could part ways. onnxruntime and onnx are imported only inside functions.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PROBE_ROWS = 2048
# Scores closer than this are a tie in a float32 graph (see `first_max`).
TIE_WINDOW = 1e-6
# A graph's scores may stray from the native model's by the verification's tolerance: a
# label picked from top scores closer than twice that is the native model's to pick.
CLOSE_CALL = 2e-5

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
    #: Outputs that are labels picked from scores, and the rows whose scores are too close
    #: for the graph to pick the native model's label (see `close_calls`).
    labels: tuple[str, ...] = ()
    close_calls: Callable[[list[np.ndarray]], np.ndarray] | None = None


class Undecided(Exception):
    """The graph's scores are too close to tell which label the native model picks."""


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
        self.codes = equality_features(graph)  # category codes: whole numbers only
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
        close_calls, labels = self.conversion.close_calls, self.conversion.labels
        if (
            close_calls is not None
            and any(name in labels for name in names)
            and close_calls(results).any()
        ):
            raise Undecided  # a label the graph cannot call: the native model picks it
        answers = []
        outputs, flat, dtypes = self.conversion.outputs, self.flat, self.dtypes
        for name in names:
            value = np.asarray(outputs[name](results))
            if name in flat and value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            answers.append(value.astype(dtypes[name], copy=False))
        return answers

    def eligible(self, features: Any, any_size: bool = False) -> np.ndarray | None:
        """The features as the graph takes them, or None when native must answer them."""
        if not isinstance(features, np.ndarray) or features.ndim != 2 or not len(features):
            return None  # no rows: native rules (scikit-learn refuses them, the graph would not)
        kind = features.dtype.kind
        if kind not in "fiu" or not (any_size or self.serves(len(features))):
            return None
        # A finite sum (one cheap reduction) proves every value finite; only when it is
        # not are the values looked at one by one (a sum can overflow).
        if kind == "f" and not math.isfinite(features.sum()) and not np.isfinite(features).all():
            return None  # missing values: the native model's own rules
        rows = self._narrowed(features)
        if rows is not None and self.codes and rows.dtype.kind == "f":
            codes = rows[:, self.codes]
            if not np.array_equal(codes, np.trunc(codes)):
                return None  # a fractional category code: the native model truncates it
        return rows

    def _narrowed(self, features: np.ndarray) -> np.ndarray | None:
        """Finite features in the graph's input precision, or None where that differs."""
        kind = features.dtype.kind
        if self.conversion.float32_only and features.dtype != np.float32:
            narrowed = features.astype(np.float32)
            if not np.array_equal(narrowed, features):
                return None
            return narrowed
        target = self.conversion.input_dtype
        if kind == "f" and features.dtype.itemsize > np.dtype(target).itemsize:
            with np.errstate(over="ignore"):  # an overflow is what is looked for below
                narrowed = features.astype(target)
            if not math.isfinite(narrowed.sum()) and not np.isfinite(narrowed).all():
                # Finite, but beyond the graph's float range: the native model decides (a
                # tree model refuses such values with a 400; the graph would answer them).
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


def close_calls(scores: np.ndarray, window: float = CLOSE_CALL) -> np.ndarray:
    """Per row, whether the top two scores lie within `window`: a float64 model's label
    there may differ from the float32 graph's (LightGBM's margin 1e-9 is class 1, the
    graph's probabilities a 0.5 tie)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        return np.zeros(len(scores), dtype=bool)
    top = np.partition(scores, -2, axis=1)
    return np.asarray(top[:, -1] - top[:, -2] < window)


def either_side(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each split threshold the nearest float32 values strictly below and above it,
    never on it: where a graph's rounding of the threshold would show."""
    t = np.asarray(thresholds, dtype=np.float64)
    t = t[np.isfinite(t) & (np.abs(t) < np.finfo(np.float32).max / 2)]
    near = t.astype(np.float32)
    below = np.where(near.astype(np.float64) < t, near, np.nextafter(near, np.float32(-np.inf)))
    above = np.where(near.astype(np.float64) > t, near, np.nextafter(near, np.float32(np.inf)))
    return below, above


def exact_leq_thresholds(graph: bytes, splits: dict[int, list[float]], zero: float = 0.0) -> bytes:
    """Make a graph's float32 `x <= t` tests exact for float32 inputs of a float64 model.

    Converters round each float64 threshold t to the nearest float32, which sends a value
    just above t the wrong way when the rounding went up. For float32 x, `x <= t` holds
    exactly when `x <= t32` with t32 the largest float32 not above t: write those instead
    (`splits`: the model's own thresholds per feature). Thresholds two originals share
    ambiguously stay as they are, for the verification to judge. `zero`: the model reads
    every |x| <= zero (a float32) as 0 (LightGBM's kZeroThreshold), which moves the
    thresholds in [-zero, zero) to -zero's float32 below, or to zero.
    """
    import onnx

    fixed: dict[tuple[int, float], float | None] = {}
    for feature, values in splits.items():
        for value in values:
            near = float(np.float32(value))
            below = np.nextafter(np.float32(near), np.float32(-np.inf))
            down = near if near <= value else float(below)
            if -zero <= value < 0:  # zeroed values fail it: only x < -zero passes
                down = float(np.nextafter(np.float32(-zero), np.float32(-np.inf)))
            elif 0 <= value < zero:  # zeroed values pass it, and nothing above zero does
                down = zero
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
                exact = fixed.get((int(feature), float(np.float32(values[index]))))
                if exact is not None:
                    values[index] = exact
    return bytes(model.SerializeToString())


def equality_features(graph: bytes) -> list[int]:
    """The features a graph's trees test for equality: categorical ones, whose codes
    XGBoost and LightGBM truncate (1.5 is category 1) where the graph compares them
    exactly, so only whole numbers there may take the graph."""
    import onnx

    found: set[int] = set()
    for node in onnx.load_from_string(graph).graph.node:
        if node.domain != "ai.onnx.ml" or not node.op_type.startswith("TreeEnsemble"):
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if {"nodes_modes", "nodes_featureids"} <= attributes.keys():
            modes, features = attributes["nodes_modes"].strings, attributes["nodes_featureids"].ints
            pairs = zip(modes, features, strict=True)
            found.update(int(f) for mode, f in pairs if mode in (b"BRANCH_EQ", b"BRANCH_NEQ"))
    return sorted(found)


def threshold_probes(
    splits: dict[int, list[float]],
    n_features: int,
    rows: int = PROBE_ROWS,
    seed: int = 0,
    categories: dict[int, list[float]] | None = None,
) -> np.ndarray:
    """Rows whose every value lies just either side of one of its feature's thresholds
    (features never split on take 0), plus rows moving one threshold at a time.

    Categorical features (`categories`: the codes their splits test) take each of those
    codes and one code past them: the graph's category tests are verified too."""
    rng = np.random.default_rng(seed)
    categories = categories or {}
    pools = []
    for feature in range(n_features):
        below, above = either_side(np.asarray(splits.get(feature, []), dtype=np.float64))
        codes = sorted(set(categories.get(feature, [])))
        exact = [0.0, *codes, codes[-1] + 1] if codes else [0.0]  # + a code no split names
        pools.append(np.unique(np.concatenate([below, above, np.asarray(exact, np.float32)])))
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
