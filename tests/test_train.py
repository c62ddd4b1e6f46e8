import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.metrics import melanoma_auc
from melanoma.train import TrainConfig, lr_at


def test_lr_every_epoch_warmup_then_cosine():
    cfg = TrainConfig(lr=3e-5, epochs=15)
    got = [lr_at(e, cfg) for e in range(15)]
    expected = [3e-6] + [3e-5 * 0.5 * (1 + math.cos(math.pi * t / 14)) for t in range(14)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[1] == pytest.approx(3e-5) and got[-1] < 3e-5 * 0.02


def test_lr_switches():
    assert [lr_at(e, TrainConfig(lr=1.0, epochs=4, warmup=False)) for e in range(4)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    )
    assert [lr_at(e, TrainConfig(lr=1.0, epochs=3, cosine=False)) for e in range(3)] == [0.1, 1.0, 1.0]
    assert [lr_at(e, TrainConfig(lr=1.0, epochs=3, warmup=False, cosine=False)) for e in range(3)] == [
        1.0
    ] * 3


def test_auc_against_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.1
    score = rng.random(200) + 0.3 * y
    assert melanoma_auc(score, y) == pytest.approx(roc_auc_score(y, score))
    assert melanoma_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(melanoma_auc([0.1, 0.2], [0, 0]))


def test_run_directory_is_not_mixed_and_retraining_replaces_rows(tmp_path, tiny_data):
    from melanoma.ingest import ingest
    from melanoma.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    fast = dict(
        out=str(tmp_path), backbone="test_efficientnet", image_size=32, epochs=1, batch_size=32, num_workers=0
    )
    train(table, TrainConfig(**fast, folds=[0]), progress=False)
    train(table, TrainConfig(**fast, folds=[1]), progress=False)
    train(table, TrainConfig(**fast, folds=[1]), progress=False)  # again: replaces fold 1's rows
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(metrics.fold) == [0, 1]
    assert json.loads((tmp_path / "config.json").read_text())["folds"] == [0, 1]
    with pytest.raises(ValueError, match=r"holds a run with other settings \(image_size, lr\)"):
        train(table, TrainConfig(**{**fast, "image_size": 48, "lr": 1e-3}, folds=[2]), progress=False)


def test_same_seed_same_metrics_with_augmentation_in_a_worker(tmp_path, tiny_data):
    from melanoma.ingest import ingest
    from melanoma.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    fast = dict(backbone="test_efficientnet", image_size=32, epochs=2, batch_size=32, num_workers=1, lr=1e-3)
    a = train(table, TrainConfig(out=str(tmp_path / "a"), **fast), progress=False)
    b = train(table, TrainConfig(out=str(tmp_path / "b"), **fast), progress=False)
    cols = ["train_loss", "val_loss", "auc"]
    assert a[cols].to_numpy() == pytest.approx(b[cols].to_numpy(), rel=1e-6)
    assert a.train_loss[0] != a.train_loss[1]
