"""KernelSHAP (shap's `KernelExplainer`) with every model evaluation in one predictor call.

shap calls its model function synchronously: once for the background, then per explained
row once for the row itself and once for the sampled coalitions. Its sampling depends on
the row and the background only, never on the model's answers, so an explanation runs in
two passes with the same seed:

1. `plan`: a recorder stands in for the model, notes every matrix shap asks about and
   answers zeros (the regression step is skipped: its result would be thrown away);
2. the caller scores the concatenation of those matrices in ONE request (`Plan.batch`);
3. `explain`: shap runs again and a replay hands back those scores in order. A replay
   asked about other rows than recorded raises instead of answering wrongly.

Each row is seeded on its own, so a row gets the same explanation alone or in a batch.
shap samples from NumPy's global generator: both passes must run on one thread that owns
it (the runtime gives them a dedicated one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shap

Score = Callable[[np.ndarray], np.ndarray]


class ReplayMismatch(RuntimeError):
    """The second pass asked about rows the first pass did not record (a shap change)."""


class _Planning(shap.KernelExplainer):
    """KernelExplainer that skips the regression (its model answers zeros in pass 1)."""

    def solve(self, fraction_evaluated: float, dim: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.M), np.ones(self.M)


@dataclass(slots=True)
class _Recorder:
    """The model during pass 1: records what it is asked, answers one zero per row."""

    calls: list[np.ndarray] = field(default_factory=list)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(rows, dtype=np.float64, copy=True))
        return np.zeros(len(rows))


@dataclass(slots=True)
class _Replay:
    """The model during pass 2: the recorded questions' scores, in the recorded order."""

    calls: list[np.ndarray]
    answers: list[np.ndarray]
    position: int = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.position >= len(self.calls) or not np.array_equal(rows, self.calls[self.position]):
            raise ReplayMismatch(
                f"KernelSHAP asked about other rows on replay (call {self.position}); "
                "the installed shap samples differently from what this explainer expects"
            )
        answer = self.answers[self.position]
        self.position += 1
        return answer


@dataclass(frozen=True, slots=True)
class Plan:
    """What pass 1 recorded: the matrices to score, in order."""

    rows: np.ndarray
    calls: list[np.ndarray]

    @property
    def batch(self) -> np.ndarray:
        """Every matrix of the plan stacked: score these rows in one request."""
        return np.concatenate(self.calls, axis=0)

    @property
    def evaluations(self) -> int:
        return sum(len(call) for call in self.calls)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Per row: contributions `[rows, features]` (`[rows, outputs, features]` for vector
    scores such as class probabilities), the base value (a float, or one per output) and
    the scores explained (`[rows]` or `[rows, outputs]`)."""

    contributions: np.ndarray
    base_value: float | np.ndarray
    scores: np.ndarray

    def with_bias(self) -> np.ndarray:
        """Contributions with the base value appended last, as the native tree explainers
        answer the V2 output `contributions`: `[rows, (outputs,) features + 1]`."""
        base = np.broadcast_to(
            np.asarray(self.base_value, dtype=np.float64)[..., None],
            (*self.contributions.shape[:-1], 1),
        )
        return np.concatenate([self.contributions, base], axis=-1)

    def rows(self, feature_names: list[str]) -> list[dict[str, Any]]:
        """The V1 `explanations` list: one `{feature_names, contributions, base_value}`."""
        base = np.asarray(self.base_value, dtype=np.float64).tolist()
        return [
            {"feature_names": feature_names, "contributions": row.tolist(), "base_value": base}
            for row in self.contributions
        ]


@dataclass(frozen=True, slots=True)
class KernelShap:
    """KernelSHAP over a fixed background sample, `nsamples` coalitions per row, seeded."""

    background: np.ndarray
    nsamples: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.background.ndim != 2 or len(self.background) == 0:
            raise ValueError("the background must be a non-empty [rows, features] matrix")
        if self.nsamples < 1:
            raise ValueError("nsamples must be at least 1")

    @property
    def width(self) -> int:
        return int(self.background.shape[1])

    def most_evaluations(self, rows: int) -> int:
        """An upper bound of the model evaluations explaining `rows` rows takes: the
        background, then per row the row and its coalitions (all of them when fewer than
        nsamples exist) against every background row."""
        coalitions = self.nsamples if self.width > 30 else min(self.nsamples, 2**self.width - 2)
        background = len(self.background)
        return background + rows * (1 + max(coalitions, 0) * background)

    def plan(self, rows: np.ndarray) -> Plan:
        """Pass 1: the matrices shap will want scored to explain `rows`."""
        recorder = _Recorder()
        explainer = _Planning(recorder, self.background)
        self._each_row(explainer, rows)
        return Plan(rows, recorder.calls)

    def explain(self, plan: Plan, batch_scores: np.ndarray) -> Explanation:
        """Pass 2: the explanation, given the scores of `plan.batch` (`[n]` or `[n, k]`)."""
        scores = _as_scores(batch_scores, plan.evaluations)
        answers = np.split(scores, np.cumsum([len(call) for call in plan.calls])[:-1])
        explainer = shap.KernelExplainer(_Replay(plan.calls, answers), self.background)
        values, explained = self._each_row(explainer, plan.rows)
        return Explanation(values, _base_value(explainer.expected_value), explained)

    def explain_with(self, rows: np.ndarray, score: Score) -> Explanation:
        """Both passes around a local scoring function (in-process use and tests)."""
        plan = self.plan(rows)
        return self.explain(plan, score(plan.batch))

    def _each_row(self, explainer: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """shap values `[rows, (outputs,) features]` and f(row), each row seeded alike."""
        values, explained = [], []
        for row in rows:
            np.random.seed(self.seed)
            phi = np.asarray(
                explainer.shap_values(row[None, :], nsamples=self.nsamples, silent=True)
            )[0]
            # shap answers [features, outputs] for vector scores; outputs first reads better.
            values.append(phi.T if phi.ndim == 2 else phi)
            explained.append(np.asarray(explainer.fx if explainer.vector_out else explainer.fx[0]))
        return np.stack(values), np.stack(explained)


def _as_scores(scores: np.ndarray, expected_rows: int) -> np.ndarray:
    """`[n]`, `[n, 1]` (one score) or `[n, k]` (k scores, e.g. class probabilities)."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (1, 2) or len(array) != expected_rows:
        raise ValueError(
            f"expected {expected_rows} scores ([rows] or [rows, outputs]), got shape "
            f"{list(array.shape)}"
        )
    return array


def _base_value(expected: Any) -> float | np.ndarray:
    array = np.asarray(expected, dtype=np.float64)
    return float(array) if array.ndim == 0 else array
