import numpy as np
import pandas as pd
import pytest

from melanoma.evaluation.selection import Candidate, correlation_divergence, plot, screen

NAMES = list("abcd")


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _predictions(rng, y, shift=0.0):
    return pd.DataFrame(_softmax(np.eye(4)[y] * 2 + rng.normal(0, 1, (len(y), 4)) + shift), columns=NAMES)


def _candidates(biased: int | None):
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 4, 2000), rng.integers(0, 4, 800)
    out = []
    for i in range(4):
        shift = np.array([1.0, 0, 0, -0.5]) if i == biased else 0.0  # test-only bias of one member
        out.append(Candidate(f"m{i}", _predictions(rng, y_train), _predictions(rng, y_test, shift)))
    return out


def test_the_biased_member_and_only_it_is_flagged(tmp_path):
    table, adv_auc = screen(_candidates(biased=2))
    assert table.flagged.tolist() == [False, False, True, False]
    assert "divergence" in table.why[2] and "importance" in table.why[2]
    assert table.importance.idxmax() == 2 and table.divergence.idxmax() == 2
    assert adv_auc > 0.6
    path = plot(table, adv_auc, 0.1, 0.02, tmp_path / "selection.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_member_flagged_without_bias_and_thresholds_are_the_users():
    table, adv_auc = screen(_candidates(biased=None))
    assert not table.flagged.any() and adv_auc < 0.6
    strict, _ = screen(_candidates(biased=None), max_divergence=0.0, max_importance=-1.0)
    assert strict.flagged.all()


def test_correlation_divergence_by_hand():
    oof = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [0.9, 0.8, 0.7, 0.6]})  # correlation -1
    test = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [0.6, 0.7, 0.8, 0.9]})  # correlation +1
    assert correlation_divergence(oof, test) == 2.0
    assert correlation_divergence(oof, oof) == 0.0


def test_candidate_from_a_run_uses_single_fold_test_predictions(tiny_runs):
    from melanoma.evaluation.predict import predict_test
    from melanoma.evaluation.selection import run_candidate

    run = tiny_runs["plain"]
    pred = predict_test(run, tiny_runs["table"], tta=False, progress=False)
    pred.save(run)
    c = run_candidate(run)
    assert list(c.oof.columns) == list(c.test.columns) == list(pred.probs.columns[1:])
    assert len(c.test) == len(pred.probs)
    # Row i comes from fold model i mod 2, not the average of both.
    by_fold = pred.by_fold.set_index(["image_name", "fold"])
    first = pred.probs.image_name.iloc[1]
    assert c.test.iloc[1].to_numpy() == pytest.approx(by_fold.loc[(first, 1)].to_numpy())
