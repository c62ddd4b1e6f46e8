import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.demo import run_demo
from melanoma.ingest import ingest
from melanoma.model import MelanomaNet
from melanoma.predict import predict_test

from .conftest import TINY

FAST = {"image_size": 32, "epochs": 2, "batch_size": 16, "num_workers": 0}


def test_demo_end_to_end_on_tiny_data(tmp_path):
    result = run_demo(tmp_path / "run", tmp_path / "cache", TINY, FAST, progress=False)
    run = result.run
    # Run directory is self-describing.
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "test_efficientnet" and config["image_size"] == 32
    assert config["classes"][6] == "melanoma"
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and set(metrics.fold) == {0}
    assert metrics.lr.tolist() == pytest.approx([3e-4, 3e-3])
    assert ((metrics.auc >= 0) & (metrics.auc <= 1)).all()
    assert result.auc == metrics.auc.max()
    # Out-of-fold file: the validation fold's rows with probabilities that sum to one.
    oof = pd.read_csv(run / "fold0/oof.csv")
    folds = pd.read_csv(run / "folds.csv")
    assert sorted(oof.image_name) == sorted(folds[folds.fold == 0].image_name)
    assert np.allclose(oof[config["classes"]].sum(axis=1), 1, atol=1e-5)
    # Weights are safetensors and load into the model.
    state = load_file(run / "fold0/best.safetensors")
    model = MelanomaNet("test_efficientnet", 9)
    model.load_state_dict(state)
    for name in ["best", "best_20", "last"]:
        assert (run / f"fold0/{name}.safetensors").stat().st_size > 0
    # Submission: every test image once, scores in [0, 1]; and it is reproducible from the run.
    sub = pd.read_csv(result.submission)
    test = pd.read_csv(result.data / "isic2020/test.csv")
    assert sorted(sub.image_name) == sorted(test.image_name)
    assert sub.target.between(0, 1).all() and sub.target.nunique() > 1
    table = ingest(result.data, progress=False)
    again = predict_test(run, table, progress=False)
    assert np.allclose(again.probs.melanoma.to_numpy(), sub.target.to_numpy(), atol=1e-6)
    assert (run / "test_probs.csv").is_file() and (run / "test_probs_by_fold.csv").is_file()
    # The cached synthetic data is reused, not regenerated.
    stamp = result.data / "truth/config.json"
    before = stamp.stat().st_mtime_ns
    assert (
        run_demo(tmp_path / "run2", tmp_path / "cache", TINY, {**FAST, "epochs": 1}, progress=False).data
        == result.data
    )
    assert stamp.stat().st_mtime_ns == before


def test_cli_lists_subcommands():
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    commands = ["synth", "ingest", "prepare", "dedup", "folds", "train", "presets", "predict", "evaluate",
                "ensemble", "select", "export", "demo"]  # fmt: skip
    for command in commands:
        assert command in out.output


def test_cli_pipeline_on_tiny_data(tmp_path):
    runner = CliRunner()
    data = tmp_path / "data"
    r = runner.invoke(
        app, ["synth", str(data), "--n-train", "80", "--n-test", "20", "--n-2019", "40", "--workers", "1"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", str(data), "--out", str(tmp_path / "table.csv")])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "table.csv")) == sum(
        len(pd.read_csv(p)) for p in [data / "isic2020/train.csv", data / "isic2020/test.csv",
                                      data / "isic2019/ISIC_2019_Training_GroundTruth.csv"]
    )  # fmt: skip
    r = runner.invoke(app, ["folds", str(data), "--k", "3"])
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(data / "folds.csv").fold) == {0, 1, 2}
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(data), "--out", str(run), "--backbone", "test_efficientnet",
                            "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
                            "--folds", "0,2", "--workers", "0", "--meta"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (run / "fold0/best.safetensors").is_file() and (run / "fold2/best.safetensors").is_file()
    assert not (run / "fold1").exists()
    assert json.loads((run / "config.json").read_text())["use_meta"] is True
    # folds.csv next to the data was used
    assert pd.read_csv(run / "folds.csv").equals(pd.read_csv(data / "folds.csv"))
    r = runner.invoke(app, ["predict", str(run), "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(run / "submission.csv")) == len(pd.read_csv(data / "isic2020/test.csv"))
    # A preset, with options given on the command line taking precedence.
    r = runner.invoke(app, ["train", str(data), "--preset", "demo", "--out", str(tmp_path / "p"), "--epochs",
                            "1", "--image-size", "32", "--no-external", "--workers", "0", "--tags", "a,b"])  # fmt: skip
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert (saved["preset"], saved["backbone"], saved["lr"], saved["batch_size"]) == (
        "demo",
        "test_efficientnet",
        3e-3,
        32,
    )
    assert (saved["epochs"], saved["image_size"], saved["external"], saved["tags"]) == (
        1,
        32,
        False,
        ["a", "b"],
    )
    oof = pd.read_csv(tmp_path / "p" / "fold0" / "oof.csv")
    assert (oof.is_ext == 0).all()  # --no-external: 2020 rows only
    r = runner.invoke(
        app, ["train", str(data), "--preset", "9c_b4ns_448_ext_15ep-newfold", "--out", str(tmp_path / "q")]
    )
    assert (
        r.exit_code == 2 and "no jpeg-melanoma-512x512 folder" in r.output
    )  # the preset reads prepared data
    r = runner.invoke(app, ["train", str(data), "--fold-method", "newfold", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "needs the tfrecord column" in r.output  # raw data has no published folds
    r = runner.invoke(app, ["train", str(data), "--preset", "b99"])
    assert r.exit_code == 2 and "unknown preset 'b99'" in r.output


def test_cli_reports_bad_data_clearly(tmp_path):
    r = CliRunner().invoke(app, ["ingest", str(tmp_path)])
    assert r.exit_code == 2
    assert "no ISIC 2020 data found" in r.output


def test_cli_predict_evaluate_ensemble_select_export(tiny_runs, tiny_data, tmp_path):
    runner = CliRunner()
    run = tiny_runs["plain"]
    r = runner.invoke(app, ["predict", str(run), "--data", str(tiny_data), "--checkpoint", "final"])
    assert r.exit_code == 0 and "8-way TTA" in r.output, r.output
    assert len(pd.read_csv(run / "submission.csv")) == len(pd.read_csv(tiny_data / "isic2020/test.csv"))
    r = runner.invoke(app, ["predict", str(run), "--images", str(tiny_data / "isic2020/jpeg/test"), "--no-tta",
                            "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert r.exit_code == 0 and "melanoma" in r.output, r.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(pd.read_csv(tiny_data / "isic2020/test.csv"))
    r = runner.invoke(app, ["predict", str(run)])
    assert r.exit_code == 2 and "give either --data DIR" in r.output
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(tiny_data), "--bootstrap", "50"])
    assert r.exit_code == 0 and "auc_rank" in r.output and "pauc_80" in r.output, r.output
    assert json.loads((run / "evaluation_best_tta.json").read_text())["tta"] is True
    r = runner.invoke(
        app, ["ensemble", str(run), str(run), "--weights", "1,2", "--out", str(tmp_path / "e.csv")]
    )
    assert r.exit_code == 0 and "ensemble" in r.output, r.output
    r = runner.invoke(app, ["select", str(run), str(run), "--out", str(tmp_path / "sel")])
    assert r.exit_code == 0 and (tmp_path / "sel/selection.png").is_file(), r.output
    r = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "onnx"), "--checkpoint", "best_20"])
    assert r.exit_code == 0 and (tmp_path / "onnx/fold1_best_20.onnx").is_file(), r.output
