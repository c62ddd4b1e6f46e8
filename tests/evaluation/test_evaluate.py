import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.evaluation.evaluate import evaluate, oof_scores
from melanoma.metrics import (
    balanced_accuracy,
    bootstrap_ci,
    confusion,
    melanoma_auc,
    partial_auc,
    rank_within,
)
from melanoma.targets import class_names


def _official_pauc(y, score, min_tpr=0.8):
    """The ISIC 2024 scoring, as published: flip labels and scores, sklearn's McClish-standardised
    partial AUC up to max_fpr, then mapped back to the raw area."""
    v_gt = 1 - np.asarray(y, int)
    v_pred = -np.asarray(score, float)
    max_fpr = 1 - min_tpr
    scaled = roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5)


def test_partial_auc_matches_the_official_scoring():
    rng = np.random.default_rng(0)
    for n, shift in [(300, 0.5), (1000, 1.5), (80, 0.0)]:
        y = rng.random(n) < 0.2
        score = rng.normal(size=n) + shift * y
        assert partial_auc(score, y) == pytest.approx(_official_pauc(y, score), abs=1e-9)
    y = np.array([0, 0, 1, 1])
    assert partial_auc([0.1, 0.2, 0.8, 0.9], y) == pytest.approx(0.2)  # perfect: the whole strip
    assert partial_auc([0.9, 0.8, 0.2, 0.1], y) == pytest.approx(0.0)
    assert np.isnan(partial_auc([0.1, 0.2], [0, 0]))


def test_balanced_accuracy_matches_the_isic_2019_scoring():
    from isic_challenge_scoring.metrics import balanced_multiclass_accuracy

    rng = np.random.default_rng(2)
    names = class_names("9c")
    for n, k, absent in [(400, 9, []), (120, 9, [3, 7]), (60, 4, []), (300, 9, [0])]:
        targets = rng.choice([c for c in range(k) if c not in absent], n)
        probs = rng.dirichlet(np.ones(k), n) + 0.8 * np.eye(k)[targets] * rng.random((n, 1))
        probs[: n // 10] = np.round(probs[: n // 10], 1)  # ties at the top: undecided rows
        probs[:3] = 1 / k  # every class tied
        columns = names[:k]
        truth = pd.DataFrame(np.eye(k)[targets], columns=columns)
        official = balanced_multiclass_accuracy(
            truth, pd.DataFrame(probs, columns=columns), pd.Series(1.0, index=truth.index)
        )
        assert balanced_accuracy(probs, targets) == pytest.approx(official, abs=1e-12)
        decided = (probs == probs.max(1, keepdims=True)).sum(1) == 1
        from sklearn.metrics import confusion_matrix

        expected = confusion_matrix(targets[decided], probs[decided].argmax(1), labels=range(k))
        assert (confusion(probs, targets) == expected).all()


def test_ranks_within_folds_and_bootstrap_interval():
    score = np.array([0.1, 0.9, 0.5, 10.0, 20.0, 30.0])
    fold = np.array([0, 0, 0, 1, 1, 1])
    assert rank_within(score, fold).tolist() == pytest.approx([1 / 3, 1, 2 / 3, 1 / 3, 2 / 3, 1])
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.15
    s = rng.normal(size=400) + y
    low, high = bootstrap_ci(melanoma_auc, s, y, n_boot=300)
    assert low < melanoma_auc(s, y) < high and high - low < 0.2
    assert bootstrap_ci(melanoma_auc, s, y, n_boot=300) == (low, high)  # seeded


def _fixed_oof():
    rng = np.random.default_rng(2)
    n = 600
    names = class_names("9c")
    probs = rng.dirichlet(np.ones(9), n)
    target = rng.integers(0, 9, n)
    target[rng.random(n) < 0.1] = 6
    probs[:, 6] += 0.2 * (target == 6)
    fold = rng.integers(0, 3, n)
    probs[fold == 1, 6] *= 3  # a fold whose model is scaled differently: rank AUC differs from raw
    oof = pd.DataFrame(
        {
            "image_name": [f"I{i}" for i in range(n)],
            "fold": fold,
            "is_ext": (rng.random(n) < 0.4).astype(int),
            "target": target,
        }
    )
    oof[names] = probs
    return oof


def test_oof_scores_against_scikit_learn():
    oof = _fixed_oof()
    got = oof_scores(oof, "9c", n_boot=200).set_index(["metric", "rows"])
    y = (oof.target == 6).to_numpy()
    old = (oof.is_ext == 0).to_numpy()
    ranked = oof.groupby("fold").melanoma.rank(pct=True).to_numpy()
    expected = {
        ("auc", "all"): roc_auc_score(y, oof.melanoma),
        ("auc", "2020"): roc_auc_score(y[old], oof.melanoma[old]),
        ("auc_rank", "all"): roc_auc_score(y, ranked),
        ("auc_rank", "2020"): roc_auc_score(y[old], ranked[old]),
        ("pauc_80", "all"): _official_pauc(y, oof.melanoma),
        ("pauc_80", "2020"): _official_pauc(y[old], oof.melanoma[old]),
    }
    for key, value in expected.items():
        assert got.loc[key, "value"] == pytest.approx(value, abs=1e-9), key
        assert got.loc[key, "low"] <= value <= got.loc[key, "high"], key
    assert got.loc[("auc", "all"), "value"] != pytest.approx(got.loc[("auc_rank", "all"), "value"])
    assert got.loc[("auc", "2020"), "images"] == old.sum() and got.loc[("auc", "all"), "melanomas"] == y.sum()


def test_evaluate_a_run_with_and_without_tta(tiny_runs):
    run, table = tiny_runs["plain"], tiny_runs["table"]
    saved = evaluate(run, None, tta=False, n_boot=100, progress=False)
    assert saved.oof_file == "oof.csv" and not saved.tta
    # Training's own OOF file of fold 0 scores what training logged as the best AUC.
    metrics = pd.read_csv(run / "metrics.csv")
    assert [f["auc"] for f in saved.folds] == pytest.approx(metrics.groupby("fold").auc.max().tolist())
    result = evaluate(run, table, "best", tta=True, n_boot=100, progress=False)
    assert result.tta and (run / "oof_best_tta.csv").is_file()
    oof = pd.read_csv(run / "oof_best_tta.csv")
    assert sorted(oof.fold.unique()) == [0, 1]
    folds = pd.read_csv(run / "folds.csv").set_index("image_name").fold
    assert (
        oof.fold.to_numpy() == folds.loc[oof.image_name].to_numpy()
    ).all()  # each row by its own fold's model
    scores = {(s["metric"], s["rows"]): s["value"] for s in result.scores}
    assert scores[("auc", "all")] == pytest.approx(roc_auc_score(oof.target == 6, oof.melanoma))
    assert json.loads((run / "evaluation_best_tta.json").read_text())["scores"] == result.scores
    assert (run / "evaluation_best.json").is_file()  # the no-TTA evaluation is kept beside it
    # nine classes: the ISIC 2019 metric and the confusion matrix of the same out-of-fold rows
    probs, targets = oof[class_names("9c")].to_numpy(), oof.target.to_numpy()
    m = result.multiclass
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy(probs, targets))
    assert m["low"] <= m["balanced_accuracy"] <= m["high"] and m["classes"] == class_names("9c")
    assert np.array(m["confusion"]).sum() == len(oof) - m["undecided"]
    assert np.array(m["confusion"]).sum(axis=1).tolist() == [
        int(((targets == c) & ((probs == probs.max(1, keepdims=True)).sum(1) == 1)).sum()) for c in range(9)
    ]
    with pytest.raises(ValueError, match="need the data"):
        evaluate(run, None, tta=True, progress=False)


def test_2020_rank_auc_ranks_among_2020_rows_within_each_fold():
    # Fold 0: three 2019 images score above both 2020 ones; fold 1 has only 2020 rows. Ranked
    # among all rows, fold 0's 2020 melanoma (0.5) sits at 2/5 below fold 1's non-melanoma at
    # 1/2: AUC 0.75. Ranked among 2020 rows, as the winners' evaluation did: 1.0.
    oof = pd.DataFrame(
        {
            "image_name": list("mnxyzMN"),
            "fold": [0, 0, 0, 0, 0, 1, 1],
            "is_ext": [0, 0, 1, 1, 1, 0, 0],
            "target": [0, 1, 1, 1, 1, 0, 1],  # 2c: melanoma is class 0
            "melanoma": [0.5, 0.4, 0.9, 0.8, 0.7, 0.6, 0.3],
        }
    )
    oof["unknown"] = 1 - oof.melanoma
    scores = oof_scores(oof, "2c", n_boot=20).set_index(["metric", "rows"]).value
    assert scores["auc_rank", "2020"] == pytest.approx(1.0)
    assert scores["auc", "2020"] == pytest.approx(1.0) and scores["auc_rank", "all"] < 1.0


def test_unfinished_folds_are_refused_unless_asked_for(tiny_runs, tmp_path):
    import shutil

    import torch
    from typer.testing import CliRunner

    from melanoma.cli import app
    from melanoma.evaluation.predict import predict_test

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    state = torch.load(run / "fold1" / "state.pt", weights_only=True)
    state["epochs"] = 5  # fold 1 stopped after 2 of 5 epochs
    torch.save(state, run / "fold1" / "state.pt")
    table = tiny_runs["table"]
    message = r"training stopped early \(fold 1 after epoch 2 of 5\).*--allow-unfinished"
    with pytest.raises(ValueError, match=message):
        predict_test(run, table, tta=False, progress=False)
    with pytest.raises(ValueError, match=message):
        evaluate(run, n_boot=10, tta=False, progress=False)
    assert (
        predict_test(run, table, tta=False, progress=False, allow_unfinished=True).by_fold.fold.nunique() == 2
    )
    result = evaluate(run, n_boot=10, tta=False, progress=False, allow_unfinished=True)
    assert result.unfinished_folds == [1]
    runner = CliRunner()
    for command in (["evaluate", str(run), "--no-tta"], ["export", str(run)]):
        r = runner.invoke(app, command)
        assert r.exit_code == 2 and "--allow-unfinished" in " ".join(r.output.split()), command
    r = runner.invoke(app, ["evaluate", str(run), "--no-tta", "--allow-unfinished", "--bootstrap", "10"])
    assert r.exit_code == 0 and "unfinished folds" in r.output and "fold 1 after epoch 2 of 5" in r.output
    assert evaluate(tiny_runs["plain"], n_boot=10, tta=False, progress=False).unfinished_folds == []


def _relabelled_copy(tiny_data, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    csv = other / "isic2020" / "train.csv"
    rows = pd.read_csv(csv)
    rows.loc[(rows.diagnosis == "nevus").idxmax(), "diagnosis"] = "unknown"  # one label differs
    rows.to_csv(csv, index=False)
    return other


def test_a_run_refuses_data_it_was_not_trained_on(tiny_runs, tiny_data, tmp_path):
    from melanoma.config import TrainConfig
    from melanoma.data.ingest import ingest
    from melanoma.rundir import run_config
    from melanoma.training.train import train

    saved = run_config(tiny_runs["plain"])["data_identity"]
    assert len(saved["identity"]) == 16 and saved["images"] > 100
    other = ingest(_relabelled_copy(tiny_data, tmp_path), verify="none", progress=False)
    with pytest.raises(
        ValueError, match=r"was trained on data [0-9a-f]{16} .*this data gives data [0-9a-f]{16}"
    ):
        evaluate(tiny_runs["plain"], other, tta=False, n_boot=10, progress=False)
    result = evaluate(tiny_runs["plain"], tiny_runs["table"], tta=False, n_boot=10, progress=False)
    assert result.data_identity == saved  # the evaluation says which data the run belongs to
    # Training another fold of a run on other data would pool the two: refused, nothing written.
    run = tmp_path / "run"
    fast = dict(
        backbone="test_efficientnet", image_size=32, batch_size=16, num_workers=0, pretrained=False, epochs=1
    )
    train(tiny_runs["table"], TrainConfig(out=str(run), folds=[0], **fast), progress=False)
    before = (run / "metrics.csv").read_text()
    with pytest.raises(ValueError, match="holds a run trained on data"):
        train(other, TrainConfig(out=str(run), folds=[1], **fast), progress=False)
    assert (run / "metrics.csv").read_text() == before and not (run / "fold1").exists()
    from typer.testing import CliRunner

    from melanoma.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(tiny_runs["plain"]), "--no-tta", "--bootstrap", "10"])
    assert r.exit_code == 0 and f"was trained on data {saved['identity']}" in " ".join(r.output.split())


def test_per_patient_top_15_retrieval_sensitivity():
    from melanoma.metrics import top_k_sensitivity

    # Patient A: 20 lesions, malignant ones ranked 1st and 20th; B: 3 lesions, its malignant one
    # scored lowest (3rd, still within 15); C: no malignant lesion, so not counted.
    score = np.r_[0.9, np.linspace(0.8, 0.1, 18), 0.01, [0.5, 0.6, 0.2], [0.3, 0.4]]
    y = np.r_[1, np.zeros(18), 1, [0, 0, 1], [0, 0]]
    patient = ["A"] * 20 + ["B"] * 3 + ["C"] * 2
    assert top_k_sensitivity(score, y, patient) == pytest.approx((0.5 + 1.0) / 2)
    assert top_k_sensitivity(score, y, patient, k=1) == pytest.approx((0.5 + 0.0) / 2)
    assert top_k_sensitivity(score, y, patient, k=20) == 1.0
    assert np.isnan(top_k_sensitivity(score, np.zeros(len(score)), patient))
    # ties are broken by order: two equal scores, only the first fits in k = 1
    assert top_k_sensitivity([0.5, 0.5], [0, 1], ["P", "P"], k=1) == 0.0
