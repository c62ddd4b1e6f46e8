import math

import numpy as np
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
