"""run.Run: a run opened from its folder, the one reader of a run for every kind, and the old
names earlier versions saved read as today's."""

import json
import shutil

import pandas as pd
import pytest

from melanoma import rundir
from melanoma.evaluation.evaluate import evaluate
from melanoma.results import Evaluation
from melanoma.run import Run


def test_a_run_opened_is_everything_it_holds(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    for made in [*run.glob("oof_*.csv"), *run.glob("evaluation_*.json")]:  # other tests' evaluations
        made.unlink()
    opened = Run(run)
    assert opened.kind == "image" and not opened.is_tree and opened.scheme == "9c" and opened.name == "run"
    assert opened.settings.backbone == json.loads((run / "config.json").read_text())["backbone"]
    saved = pd.read_csv(run / "folds.csv").set_index("image_name").fold
    assert opened.folds.equals(saved) and opened.trained_folds() == [0, 1]
    assert opened.latest_oof_name == "fold*/oof.csv" and len(opened.oof()) == saved.isin([0, 1]).sum()
    assert opened.metrics() is not None and opened.metrics().fold.nunique() == 2
    for absent in (opened.calibration(), opened.operating_points(), opened.subgroups(), opened.gallery()):
        assert absent is None
    assert opened.evaluations() == [] and opened.model_card() is None and opened.feature_importance() is None
    made = evaluate(run, None, tta=False, n_boot=20, progress=False)
    assert isinstance(made, Evaluation) and opened.evaluations() == [made]
    assert made.value("auc") == next(
        s["value"] for s in made.scores if (s["metric"], s["rows"]) == ("auc", "all")
    )
    assert list(made.table().columns)[-1] == "melanomas" and made.title() == "best, no TTA"
    assert made.per_fold_text().startswith("AUC") and "fold 1" in made.per_fold_text()
    assert opened.model(0).training is False  # a fold's model, in eval mode
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        Run(tmp_path / "not-a-run")


def test_runs_saved_with_the_old_names_read_with_todays(tiny_runs, tmp_path):
    """config.json's data identity was "data", a tree run's fold method gbdt "folds"; an older
    evaluation said "data" too."""
    run = tmp_path / "old"
    shutil.copytree(tiny_runs["plain"], run)
    config = json.loads((run / "config.json").read_text())
    identity = config.pop("data_identity")
    (run / "config.json").write_text(json.dumps({**config, "data": identity}))
    assert Run(run).data_identity == identity and "data" not in Run(run).config
    made = evaluate(run, tiny_runs["table"], tta=False, n_boot=10, progress=False)  # its own data: accepted
    assert made.data_identity == identity
    path = run / "evaluation_best.json"
    old = json.loads(path.read_text())
    old["data"] = old.pop("data_identity")
    path.write_text(json.dumps(old))
    assert Run(run).evaluations()[0].data_identity == identity
    rundir.check(run, {**config, "data_identity": identity}, [0], resume=True)  # the same run, not refused

    tree = tmp_path / "tree"
    tree.mkdir()
    gbdt = {"k_folds": 5, "n_estimators": 30}
    saved = {
        "kind": "gbdt",
        "scheme": "mb",
        "folds": [0, 1],
        "gbdt": {**gbdt, "folds": "centre"},
    }
    (tree / "config.json").write_text(json.dumps(saved))
    assert Run(tree).kind == "tree" and Run(tree).config["gbdt"]["fold_method"] == "centre"
    rundir.check(tree, {"kind": "gbdt", "scheme": "mb", "folds": [0, 1],
                        "gbdt": {**gbdt, "fold_method": "centre"}}, [0, 1], resume=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"holds a run with other settings \(gbdt\)"):
        rundir.check(tree, {"kind": "gbdt", "scheme": "mb", "folds": [0, 1],
                            "gbdt": {**gbdt, "fold_method": "patient"}}, [0, 1], resume=False)  # fmt: skip


def test_an_image_run_and_a_tree_run_never_share_a_folder(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    with pytest.raises(ValueError, match="holds an image run; choose another --out for the tree model"):
        rundir.check(run, {"kind": "gbdt", "folds": [0]}, [0], resume=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "config.json").write_text(json.dumps({"kind": "gbdt", "folds": [0]}))
    with pytest.raises(
        ValueError, match=r"holds a tree run \(`melanoma gbdt`\); choose another --out for the image"
    ):
        rundir.check(tree, json.loads((run / "config.json").read_text()), [0], resume=False)
