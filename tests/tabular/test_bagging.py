"""The top teams' sampling per bag, the early-stopping split inside a training fold, and one
fold's bags."""

import numpy as np
import pandas as pd

from melanoma.tabular.bagging import fit_fold, sample_rows, stopping_split


def test_positives_oversampled_then_negatives_undersampled():
    y = np.zeros(10_010, dtype=int)
    y[:10] = 1  # 0.1% malignant, as ISIC 2024
    rng = np.random.default_rng(0)
    rows = sample_rows(y, 0.003, 0.01, rng)
    picked = y[rows]
    assert picked.sum() == 30  # 0.003 x 10,000 negatives
    assert (picked == 0).sum() == 3000  # the positives are 1% of the negatives kept
    assert set(rows[picked == 1]) == set(range(10))  # every positive, some twice
    assert len(np.unique(rows[picked == 0])) == 3000  # negatives without replacement
    other = sample_rows(y, 0.003, 0.01, np.random.default_rng(1))
    assert set(other[y[other] == 0]) != set(rows[picked == 0])  # the bags differ
    assert len(sample_rows(y, 0, 0, rng)) == len(y)  # both steps off: every row once
    rich = np.r_[np.ones(100, int), np.zeros(900, int)]  # already above both rates: left as it is
    assert len(sample_rows(rich, 0.003, 0.01, rng)) == 1000


def test_early_stopping_holds_out_whole_patients_of_the_training_fold():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(60), 10)
    y = (rng.random(600) < 0.05).astype(int)
    fit, stop = stopping_split(y, patients, 0.15, 0)
    assert not set(patients[fit]) & set(patients[stop])
    assert 0.08 < len(stop) / 600 < 0.25 and y[stop].sum() > 0 and y[fit].sum() > 0
    fit, stop = stopping_split(y[:20], patients[:20], 0.15, 0)  # two patients: nothing to hold out
    assert len(fit) == 20 and len(stop) == 0


def test_a_fold_bags_every_library_and_never_stops_on_its_validation_rows(monkeypatch):
    from melanoma.tabular import boosters

    rng = np.random.default_rng(0)
    n = 800
    x = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(0, 1, n)})
    y = (x.a + rng.normal(0, 0.5, n) > 1.5).astype(int).to_numpy()
    patients = np.repeat(np.arange(80), 10)
    train, val, test = np.arange(0, 600), np.arange(600, 750), np.arange(750, 800)
    seen = []
    fit = boosters.fit

    def watched(library, preset, settings, data, stop, categories, seed, chosen=None):
        seen.append((library, seed, set(data[0].index), set(stop[0].index)))
        return fit(library, preset, settings, data, stop, categories, seed, chosen)

    monkeypatch.setattr(boosters, "fit", watched)
    settings = {"models": ["lightgbm", "xgboost"], "bags": 3, "seed": 4, "pos_rate": 0.0, "neg_rate": 0.2,
                "early_stopping": 10, "stop_share": 0.2, "params": "default", "n_estimators": 30,
                "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 5, "subsample": 0.8,
                "colsample_bytree": 1.0, "reg_lambda": 1.0}  # fmt: skip
    out = fit_fold(settings, x, y, patients, (train, val, test), {})
    assert [(m[0], m[1]) for m in out.models] == [
        (lib, b) for lib in ("lightgbm", "xgboost") for b in range(3)
    ]
    assert len({frozenset(s[2]) for s in seen}) == 6  # each bag its own sample (and seed)
    for _, _, fitted, stopped in seen:
        assert fitted <= set(train) and stopped <= set(train) and not fitted & stopped
        assert not (fitted | stopped) & (set(val) | set(test))
    assert out.val["lightgbm"].shape == (150,) and out.test["xgboost"].shape == (50,)
    assert abs(out.importance.sum() - 1) < 1e-9 and out.importance.idxmax() == "a"
