"""--tune: Optuna's trials nested in the training fold, never on the fold being scored."""

import json

import numpy as np
import pandas as pd
import pytest

from melanoma.tabular import boosters
from melanoma.tabular.bagging import fit_fold
from melanoma.tabular.tuning import space

SETTINGS = {"models": ["lightgbm", "xgboost"], "bags": 2, "seed": 1, "pos_rate": 0.0, "neg_rate": 0.0,
            "early_stopping": 0, "stop_share": 0.2, "params": "default", "n_estimators": 20, "tune": 3,
            "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 5, "subsample": 0.8,
            "colsample_bytree": 1.0, "reg_lambda": 1.0}  # fmt: skip


def test_trials_see_only_the_training_fold_and_the_bags_use_the_best(monkeypatch):
    import optuna

    rng = np.random.default_rng(0)
    n = 900
    x = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(0, 1, n)})
    y = (x.a + rng.normal(0, 0.7, n) > 1.3).astype(int).to_numpy()
    patients = np.repeat(np.arange(90), 10)
    train, val, test = np.arange(0, 600), np.arange(600, 850), np.arange(850, 900)
    calls = []
    fit = boosters.fit

    def watched(library, preset, settings, data, stop, categories, seed, chosen=None):
        calls.append((library, chosen, set(data[0].index) | set(stop[0].index)))
        return fit(library, preset, settings, data, stop, categories, seed, chosen)

    monkeypatch.setattr(boosters, "fit", watched)
    out = fit_fold(SETTINGS, x, y, patients, (train, val, test), {})
    assert set(out.tuned) == {"lightgbm", "xgboost"}
    for library in ("lightgbm", "xgboost"):
        trials = [c for c in calls if c[0] == library][:3]
        bags = [c for c in calls if c[0] == library][3:]
        assert len(bags) == 2 and all(c[1] == out.tuned[library][0] for c in bags)  # the best trial's
        assert all(c[2] <= set(train) for c in trials + bags)  # never the validation or test rows
        assert 0 <= out.tuned[library][1] <= 0.2
    trial = optuna.trial.FixedTrial({"learning_rate": 0.05, "subsample": 0.7, "scale_pos_weight": 2.0, "depth": 6,
                                     "l2_leaf_reg": 3.0})  # fmt: skip
    assert space("catboost", trial)["depth"] == 6


def test_a_tuned_run_saves_its_parameters_and_says_so(tmp_path):
    from melanoma.card import write_card
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024
    from melanoma.tabular.gbdt import GbdtConfig, train_gbdt

    generate_2024(
        tmp_path / "data", Synth2024Config(n_train=500, n_test=3, malignant_rate=0.06, seed=4), progress=False
    )
    run = tmp_path / "run"
    train_gbdt(
        tmp_path / "data", GbdtConfig(out=str(run), k_folds=3, tune=2, n_estimators=20), progress=False
    )
    tuned = pd.read_csv(run / "tuning.csv")
    assert tuned.fold.tolist() == [0, 1, 2] and (tuned.model == "lightgbm").all()
    assert {"learning_rate", "num_leaves", "scale_pos_weight"} <= set(json.loads(tuned.params[0]))
    assert "tuned over 2 trials" in (run / "log.txt").read_text()
    assert "tuned by Optuna (2 trials per library and fold" in write_card(run, tmp_path / "data").read_text()
    with pytest.raises(ValueError, match="tune must be at least 0"):
        GbdtConfig(tune=-1)
