import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.demo import run_demo
from melanoma.models.model import MelanomaNet
from tests.conftest import TINY

FAST = {"image_size": 32, "data_size": 48, "epochs": 1, "batch_size": 16, "num_workers": 0}


def test_demo_end_to_end_on_tiny_data(tmp_path):
    result = run_demo(tmp_path / "run", tmp_path / "cache", TINY, FAST, progress=False, external_images=40)
    suite = result.run
    # Two models (the ablation's two variants), each a self-describing run over folds 0-2.
    for variant, pretrained in [("baseline", True), ("no-pretraining", False)]:
        run = suite / variant
        config = json.loads((run / "config.json").read_text())
        assert (config["backbone"], config["pretrained"], config["image_size"]) == (
            "tf_efficientnet_lite0",
            pretrained,
            32,
        )
        assert config["classes"][6] == "melanoma" and config["data_size"] == 48
        metrics = pd.read_csv(run / "metrics.csv")
        assert sorted(set(metrics.fold)) == [0, 1, 2] and metrics.epoch.max() == 1
        oof = pd.read_csv(run / "fold0/oof.csv")
        folds = pd.read_csv(run / "folds.csv")
        assert sorted(oof.image_name) == sorted(folds[folds.fold == 0].image_name)
        assert np.allclose(oof[config["classes"]].sum(axis=1), 1, atol=1e-5)
        model = MelanomaNet("tf_efficientnet_lite0", 9)
        model.load_state_dict(load_file(run / "fold0/best.safetensors"))
        assert (run / "submission.csv").is_file() and (run / "test_probs_by_fold.csv").is_file()
    # The pipeline's steps left their outputs in the data folder.
    assert (result.data / "duplicates.csv").is_file() and (result.data / "jpeg-melanoma-48x48").is_dir()
    assert (result.data / "folds.csv").is_file() and (result.data / "dedup/review.html").is_file()
    # Ensemble submission: every test image once, in [0, 1]; its OOF AUC is the printed one.
    sub = pd.read_csv(result.submission)
    test = pd.read_csv(result.data / "isic2020/test.csv")
    assert sorted(sub.image_name) == sorted(test.image_name) and sub.target.between(0, 1).all()
    members = pd.read_csv(suite / "ensemble_members.csv")
    assert members.member.tolist()[-1] == "ensemble" and members.oof_auc.iloc[-1] == pytest.approx(result.auc)
    ablation = pd.read_csv(suite / "ablation.csv")
    assert ablation.variant.tolist() == ["baseline", "no-pretraining"] and (ablation.folds == 3).all()
    page = result.report.read_text()
    assert "no-pretraining" in page and "Ensemble ensemble.csv" in page and page.count("data:image/png") >= 4
    # The headline first: the summary, then the ensemble, then the ablation and its runs.
    top = page.split("<h2>Ensemble")[0]
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Ensemble") < page.index("<h2>Ablation suite")
    assert f"Ensemble out-of-fold AUC {result.auc:.3f}" in top
    for row in ablation.itertuples():
        assert f"{row.variant} {row.auc_mean:.3f} +- {row.auc_std:.3f}" in top
    # The clinical questions, on the pretrained run: in its folder and in the report.
    base = suite / "baseline"
    for name in (
        "calibration.json",
        "operating_points.json",
        "subgroups.json",
        "explain/gallery.csv",
        "MODEL_CARD.md",
        "ood.json",
        "validation_same-centre.json",
        "validation_shifted-centre.json",
    ):
        assert (base / name).is_file(), name
    card = (base / "MODEL_CARD.md").read_text()
    assert "## External validation" in card and "shifted-centre (" in card and "input checks flagged" in card
    assert page.count("<figure>") == 6 and "temperature" in page and "Operating points" in page
    assert "**synthetic**" in (base / "MODEL_CARD.md").read_text()
    # A rerun reuses the cached data and skips the finished units.
    stamp = result.data / "truth/config.json"
    before = stamp.stat().st_mtime_ns
    again = run_demo(tmp_path / "run", tmp_path / "cache", TINY, FAST, progress=False, external_images=40)
    assert again.data == result.data and again.auc == pytest.approx(result.auc)
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
                            "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--lr", "1e-4",
                            "--folds", "0,2", "--workers", "0", "--meta", "--no-pretrained", "--no-sync-bn"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (run / "fold0/best.safetensors").is_file() and (run / "fold2/best.safetensors").is_file()
    assert not (run / "fold1").exists()
    saved = json.loads((run / "config.json").read_text())
    assert saved["use_meta"] is True and saved["sync_bn"] is False
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
        3e-4,
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


def test_demo_isic2024_end_to_end(tmp_path, monkeypatch):
    """The 2024 demo: synthetic crops in HDF5, an image model over 3 patient folds, LightGBM on the
    tables and stacked on the image scores, the tree ensemble stacked, each evaluated by pAUC (a tiny
    image model here)."""
    from melanoma.demo import run_demo_2024
    from melanoma.rundir import run_config

    tiny = {"backbone": "test_efficientnet", "pretrained": False, "image_size": 32, "epochs": 1, "channels_last": False,
            "num_workers": 0, "neg_per_epoch": 300}  # fmt: skip
    small = {"n_train": 1200, "n_test": 60, "malignant_rate": 0.04}
    from melanoma import demo

    # the demo's ensemble, smaller: one bag of each library, fewer rounds (the same path)
    monkeypatch.setattr(
        demo, "DEMO_2024_ENSEMBLE", {**demo.DEMO_2024_ENSEMBLE, "bags": 1, "n_estimators": 80}
    )
    table = run_demo_2024(tmp_path / "run", tmp_path / "cache", tiny, progress=False, synth_overrides=small)
    assert table.model.tolist() == [
        "image model",
        "LightGBM, tables",
        "LightGBM, stacked",
        "tree ensemble, stacked",
    ]
    assert ((table.pauc_low <= table.pauc_80) & (table.pauc_80 <= table.pauc_high)).all()
    assert table.pauc_80.between(0, 0.2).all() and table.top15_sensitivity.between(0, 1).all()
    assert table.pauc_80.iloc[1] > 0.04  # the tables alone: well above random (about 0.02)
    image, stacked = tmp_path / "run/image", tmp_path / "run/stacked"
    assert run_config(image)["scheme"] == "mb" and run_config(image)["pos_oversample"] == 5
    assert "image_score" in run_config(stacked)["features"]
    assert (image / "test_probs.csv").is_file()
    ensemble = run_config(tmp_path / "run/ensemble")
    assert (
        ensemble["backbone"] == "lightgbm+xgboost+catboost"
        and "image_score_patient_z" in ensemble["features"]
    )
    page = (tmp_path / "run/report.html").read_text()  # the summary first, then the ensemble run
    assert (
        page.index("<h2>Summary</h2>")
        < page.index("tree ensemble, stacked")
        < page.index("<h2>Run ensemble</h2>")
    )
    assert f"{table.pauc_80.max():.3f}" in page.split("<h2>Run ensemble</h2>")[0]
    folds = pd.read_csv(tmp_path / "run/tabular/folds.csv").set_index("image_name").fold
    assert (pd.read_csv(image / "folds.csv").set_index("image_name").fold.loc[folds.index] == folds).all()
