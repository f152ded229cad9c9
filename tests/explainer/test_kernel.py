"""KernelSHAP in two passes (plan, one scoring call, replay), in-process with real models."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("shap")

from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelport.runtimes.explainer.kernel import KernelShap, Plan, ReplayMismatch

X, Y = load_iris(return_X_y=True)
ROWS = X[[0, 60, 120]]


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    return LogisticRegression(max_iter=1000, random_state=0).fit(X, Y)


def test_probability_contributions_add_up(classifier):
    kernel = KernelShap(X[::5], nsamples=64)
    explanation = kernel.explain_with(ROWS, classifier.predict_proba)
    assert explanation.contributions.shape == (3, 3, 4)  # rows, classes, features
    proba = classifier.predict_proba(ROWS)
    assert np.allclose(explanation.scores, proba)
    totals = explanation.contributions.sum(axis=-1) + explanation.base_value
    assert np.allclose(totals, proba, atol=1e-9)
    assert np.allclose(explanation.base_value, classifier.predict_proba(X[::5]).mean(axis=0))
    with_bias = explanation.with_bias()
    assert with_bias.shape == (3, 3, 5)
    assert np.allclose(with_bias.sum(axis=-1), proba, atol=1e-9)


def test_linear_model_gets_exact_shapley_values():
    """Fully enumerated coalitions: a linear model's SHAP value is coef * (x - E[x])."""
    features = X[:, :3]
    model = LinearRegression().fit(features, X[:, 3])
    background = features[::10]
    kernel = KernelShap(background, nsamples=100)
    explanation = kernel.explain_with(features[[5, 80]], model.predict)
    expected = model.coef_ * (features[[5, 80]] - background.mean(axis=0))
    assert explanation.contributions.shape == (2, 3)
    assert np.allclose(explanation.contributions, expected, atol=1e-9)
    assert isinstance(explanation.base_value, float)
    rows = explanation.rows(["a", "b", "c"])
    assert rows[0]["feature_names"] == ["a", "b", "c"]
    assert rows[0]["base_value"] == pytest.approx(model.predict(background).mean())


def test_one_scoring_call_bounded_by_nsamples(classifier):
    background = X[::10]
    kernel = KernelShap(background, nsamples=8)
    calls: list[int] = []

    def score(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return classifier.predict_proba(rows)

    kernel.explain_with(ROWS, score)
    assert len(calls) == 1
    # background once, then per row: the row and at most nsamples coalitions x background.
    assert calls[0] <= len(background) + len(ROWS) * (1 + 8 * len(background))
    assert calls[0] <= kernel.most_evaluations(len(ROWS))
    # Four features have 14 coalitions: more samples than that change nothing.
    assert KernelShap(background, nsamples=500).most_evaluations(1) == 15 * len(background) + 1


def test_a_row_is_explained_alike_alone_or_in_a_batch(classifier):
    kernel = KernelShap(X[::7], nsamples=10, seed=3)
    together = kernel.explain_with(ROWS, classifier.predict_proba)
    alone = kernel.explain_with(ROWS[2:], classifier.predict_proba)
    assert np.array_equal(together.contributions[2], alone.contributions[0])


def test_replay_of_other_rows_is_refused(classifier):
    kernel = KernelShap(X[::10], nsamples=8)
    plan = kernel.plan(ROWS[:1])
    other = Plan(ROWS[1:2], plan.calls)
    with pytest.raises(ReplayMismatch):
        kernel.explain(other, classifier.predict_proba(plan.batch))


def test_scores_of_the_wrong_length_are_refused(classifier):
    kernel = KernelShap(X[::10], nsamples=8)
    plan = kernel.plan(ROWS[:1])
    with pytest.raises(ValueError, match="scores"):
        kernel.explain(plan, classifier.predict_proba(plan.batch[:-1]))
