import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.evaluation.ensemble import ensemble, oof_ensemble, percentile_ranks, rank_average


def test_rank_average_by_hand():
    a = pd.DataFrame({"image_name": ["x", "y", "z", "w"], "target": [0.9, 0.1, 0.5, 0.5]})
    b = pd.DataFrame({"image_name": ["w", "z", "y", "x"], "target": [0.01, 0.02, 0.03, 0.04]})
    # ranks / n: a -> x 4/4, y 1/4, z and w tie at 2.5/4; b (by name) -> x 4/4, y 3/4, z 2/4, w 1/4
    got = rank_average([a, b]).set_index("image_name").target
    assert got.to_dict() == pytest.approx({"x": 1.0, "y": 0.5, "z": 2.25 / 4, "w": 1.75 / 4})
    weighted = rank_average([a, b], weights=[3, 1]).set_index("image_name").target
    assert weighted["y"] == pytest.approx(0.75 * 0.25 + 0.25 * 0.75)
    assert percentile_ranks([3.0, 1.0, 2.0]).tolist() == pytest.approx([1, 1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="member 2: scores other images"):
        rank_average([a, b.head(3)])
    with pytest.raises(ValueError, match="expected 2 non-negative weights"):
        rank_average([a, b], weights=[1])


def test_oof_ensemble_ranks_within_folds():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.random(n) < 0.2
    fold = rng.integers(0, 4, n)
    base = pd.DataFrame(
        {"image_name": [f"I{i}" for i in range(n)], "fold": fold, "is_ext": 0, "is_melanoma": y}
    )
    m1 = base.assign(score=rng.normal(size=n) + y)
    m2 = base.assign(score=(rng.normal(size=n) + y) * (1 + fold))  # scales differ per fold
    got = oof_ensemble([m1, m2])
    r1 = m1.groupby("fold").score.rank(pct=True)
    r2 = m2.groupby("fold").score.rank(pct=True)
    assert got["auc"] == pytest.approx(roc_auc_score(y, (r1 + r2) / 2))
    assert got["auc"] > max(
        oof_ensemble([m1])["auc"], oof_ensemble([m2])["auc"]
    )  # independent errors average out
    with pytest.raises(ValueError, match="folds differ"):
        oof_ensemble([m1, m2.assign(fold=(fold + 1) % 4)])


def test_ensemble_of_runs(tiny_runs, tmp_path):
    from melanoma.evaluation.predict import predict_test, to_submission

    table = tiny_runs["table"]
    for name in ("plain", "meta"):
        run = tiny_runs[name]
        to_submission(predict_test(run, table, tta=False, progress=False).probs, run).to_csv(
            run / "submission.csv", index=False
        )
    # Runs trained on different folds cannot be compared out of fold: only the submission then.
    sub, table_ = ensemble(
        [tiny_runs["plain"], tiny_runs["plain"] / "submission.csv"], out=tmp_path / "e.csv"
    )
    assert (tmp_path / "e.csv").is_file() and "oof_auc" not in table_
    assert sub.target.between(0, 1).all() and len(sub) == (table.split == "test").sum()
    with pytest.raises(ValueError, match="rows or folds differ"):
        ensemble([tiny_runs["plain"], tiny_runs["meta"]])
    sub, members = ensemble([tiny_runs["plain"], tiny_runs["plain"]], weights=[1, 3], out=tmp_path / "e2.csv")
    assert list(members.member)[-1] == "ensemble" and members.weight.iloc[:2].tolist() == [0.25, 0.75]
    assert members.oof_auc.iloc[2] == pytest.approx(members.oof_auc.iloc[0], abs=1e-9)  # the same run twice


def test_a_member_with_a_missing_score_is_refused(tmp_path):
    from melanoma.evaluation.ensemble import member_submission

    good = pd.DataFrame({"image_name": ["ISIC_1", "ISIC_2", "ISIC_3"], "target": [0.1, 0.5, 0.9]})
    good.to_csv(tmp_path / "good.csv", index=False)
    assert member_submission(tmp_path / "good.csv").target.tolist() == [0.1, 0.5, 0.9]
    cases = {
        "nan.csv": (good.assign(target=[0.1, np.nan, 0.9]), r"nan.csv: .*1 NaN or non-numeric target"),
        "inf.csv": (good.assign(target=[0.1, np.inf, 0.9]), r"1 target\(s\) outside \[0, 1\]"),
        "twice.csv": (pd.concat([good, good.head(1)]), r"1 repeated image\(s\), e.g. ISIC_1"),
        "cols.csv": (good.rename(columns={"target": "score"}), "columns must be image_name,target"),
    }
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        with pytest.raises(ValueError, match=message):
            member_submission(tmp_path / name)
        # Before, a NaN member gave an ensemble whose every value was empty.
        with pytest.raises(ValueError, match="not a usable ensemble member"):
            ensemble([tmp_path / "good.csv", tmp_path / name], out=tmp_path / "e.csv")
    assert not (tmp_path / "e.csv").exists()
