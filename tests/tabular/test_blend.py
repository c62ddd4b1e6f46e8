"""Blending the libraries: mean, rank and weights fitted on the other folds only."""

import numpy as np
import pandas as pd
import pytest

from melanoma.tabular.blend import combine, fit_weights, fold_weights, simplex


def test_mean_and_rank_blends_by_hand():
    scores = {"a": np.array([0.1, 0.2, 0.9]), "b": np.array([0.3, 0.1, 0.2])}
    assert combine(scores, {"a": 1, "b": 1}, "mean") == pytest.approx([0.2, 0.15, 0.55])
    assert combine(scores, {"a": 3, "b": 1}, "mean") == pytest.approx([0.15, 0.175, 0.725])
    # ranks (1/3, 2/3, 1) and (1, 1/3, 2/3)
    assert combine(scores, {"a": 1, "b": 1}, "rank") == pytest.approx([2 / 3, 0.5, 5 / 6])
    assert len(simplex(["a", "b", "c"])) == 66 and all(
        sum(w.values()) == pytest.approx(1) for w in simplex("ab")
    )


def test_fitted_weights_never_see_the_fold_they_score():
    rng = np.random.default_rng(0)
    n = 900
    target = (rng.random(n) < 0.1).astype(int)
    fold = np.repeat([0, 1, 2], 300)
    good, bad = target + rng.normal(0, 0.3, n), rng.normal(0, 1, n)
    # in folds 1 and 2 model a knows the answer; in fold 0, b does
    a = np.where(fold == 0, bad, good)
    b = np.where(fold == 0, good, bad)
    oof = pd.DataFrame({"fold": fold, "target": target, "a": a, "b": b})
    w0 = fit_weights(oof, ["a", "b"], leave_out=0)
    assert w0["a"] > w0["b"]  # learnt from folds 1 and 2 only
    changed = oof.copy()
    changed.loc[changed.fold == 0, ["a", "b"]] = rng.normal(0, 1, (300, 2))
    assert fit_weights(changed, ["a", "b"], leave_out=0) == w0  # fold 0's own scores play no part
    weights = fold_weights(oof, ["a", "b"], [0, 1, 2], "fitted")
    assert weights[0] == w0 and weights[1]["a"] >= 0.5
    assert fold_weights(oof, ["a", "b"], [0, 1], "rank") == {0: {"a": 1.0, "b": 1.0}, 1: {"a": 1.0, "b": 1.0}}
