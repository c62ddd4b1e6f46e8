"""ISIC 2024 (SLICE-3D): the layout in and out, HDF5 images in the loader, the leak guard, the
tree model and its run directory, the sampler and the metrics on hand-made cases."""

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from melanoma import __version__
from melanoma.data.checks import DataError
from melanoma.data.formats import COLUMNS_2024_TEST, COLUMNS_2024_TRAIN, TRAIN_ONLY_2024
from melanoma.data.ingest import ingest
from melanoma.inputs.decode import ImageError, read_rgb
from melanoma.metrics import partial_auc
from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024
from melanoma.tabular.features import LeakError, build_features, check_features
from melanoma.tabular.gbdt import GbdtConfig, train_gbdt

SMALL = Synth2024Config(
    n_train=900, n_test=30, malignant_rate=0.03, centres=3, lesions_per_patient=20, seed=5
)


@pytest.fixture(scope="module")
def data24(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("isic2024") / "data"
    generate_2024(root, SMALL, progress=False)
    return root


def _copy(data24: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data24, dst)
    return dst


def test_synthetic_layout_is_the_real_one(data24, tmp_path):
    folder = data24 / "isic2024"
    train = pd.read_csv(folder / "train-metadata.csv")
    test = pd.read_csv(folder / "test-metadata.csv")
    assert list(train.columns) == COLUMNS_2024_TRAIN
    assert list(test.columns) == COLUMNS_2024_TEST
    assert not set(TRAIN_ONLY_2024) & set(test.columns)
    assert len(train) == 900 and len(test) == 30
    assert train.target.sum() == round(0.03 * 900)
    assert train.attribution.nunique() == 3 and train.patient_id.nunique() < 900 / 5  # many lesions each
    assert set(train.sex.dropna()) <= {"male", "female"}
    assert set(train.tbp_tile_type) <= {"3D: white", "3D: XP"}
    assert set(pd.read_csv(folder / "sample_submission.csv").columns) == {"isic_id", "target"}
    with h5py.File(folder / "train-image.hdf5", "r") as f:
        assert set(f.keys()) == set(train.isic_id)
        first = bytes(f[train.isic_id[0]][()])
    assert first[:2] == b"\xff\xd8" and first.rstrip(b"\0")[-2:] == b"\xff\xd9"  # JPEG bytes as stored
    # The same seed gives the same tables and image bytes; another seed does not.
    again = tmp_path / "again"
    generate_2024(again, SMALL, progress=False)
    assert (again / "isic2024/train-metadata.csv").read_bytes() == (
        folder / "train-metadata.csv"
    ).read_bytes()
    with h5py.File(again / "isic2024/train-image.hdf5", "r") as f:
        assert bytes(f[train.isic_id[0]][()]) == first
    other = tmp_path / "other"
    generate_2024(other, Synth2024Config(**{**SMALL.__dict__, "seed": 6}), progress=False)
    assert (other / "isic2024/train-metadata.csv").read_bytes() != (
        folder / "train-metadata.csv"
    ).read_bytes()


def test_a_malignant_lesion_stands_out_from_its_own_patient(data24):
    train = pd.read_csv(data24 / "isic2024/train-metadata.csv")
    by = train.groupby("patient_id")
    for column, sign in (("tbp_lv_deltaL", -1), ("tbp_lv_nevi_confidence", -1), ("tbp_lv_norm_color", 1)):
        within = (train[column] - by[column].transform("mean")) / by[column].transform("std")
        assert sign * within[train.target == 1].mean() > 0.4, column
    # Patients differ: their mean darkness varies more between patients than lesions within one.
    assert by.tbp_lv_deltaL.mean().std() > 0.8 * by.tbp_lv_deltaL.std().mean()


def test_ingest_reads_the_layout_and_the_crops_from_hdf5(data24):
    table = ingest(data24, progress=False)
    assert list(table.split.value_counts().sort_index()) == [30, 900]  # test, train
    assert table.image_path[0].endswith("train-image.hdf5::" + table.image_name[0])
    assert set(table.diagnosis.dropna()) == {"benign", "malignant"}
    assert (
        table.target[table.split == "train"] == (table.diagnosis == "malignant")[table.split == "train"]
    ).all()
    image = read_rgb(table.image_path[0])
    assert image.ndim == 3 and SMALL.crop_min <= image.shape[0] <= SMALL.crop_max
    with pytest.raises(DataError, match="scheme mb"):
        ingest(data24, scheme="9c", progress=False)
    with pytest.raises(ImageError, match="no image 'ISIC_nope'"):
        read_rgb(str(data24 / "isic2024/train-image.hdf5") + "::ISIC_nope")


def test_ingest_names_what_is_wrong(data24, tmp_path):
    data = _copy(data24, tmp_path)
    meta = data / "isic2024/train-metadata.csv"
    good = pd.read_csv(meta)
    good.drop(columns=["tbp_lv_areaMM2"]).to_csv(meta, index=False)
    with pytest.raises(DataError, match="train-metadata.csv.*tbp_lv_areaMM2"):
        ingest(data, progress=False)
    bad = good.copy()
    bad.loc[3, "target"] = 2
    bad.to_csv(meta, index=False)
    with pytest.raises(DataError, match=f"target other than 0.*{good.isic_id[3]}"):
        ingest(data, progress=False)
    good.to_csv(meta, index=False)
    with h5py.File(data / "isic2024/train-image.hdf5", "a") as f:
        del f[good.isic_id[7]]
    with pytest.raises(DataError, match=f"no image in .*train-image.hdf5.*{good.isic_id[7]}"):
        ingest(data, progress=False)
    # Unpacked images (train-image/image/<isic_id>.jpg) are read when there is no HDF5 file.
    (data / "isic2024/train-image.hdf5").unlink()
    images = data / "isic2024/train-image/image"
    images.mkdir(parents=True)
    with h5py.File(data24 / "isic2024/train-image.hdf5", "r") as f:
        for key in good.isic_id:
            (images / f"{key}.jpg").write_bytes(bytes(f[key][()]))
    table = ingest(data, progress=False)
    assert table.image_path[0] == str(images / f"{good.isic_id[0]}.jpg")
    # ISIC 2024 and 2020 in one data folder are refused.
    (data / "isic2020").mkdir()
    (data / "isic2020/train.csv").write_text("image_name\n")
    with pytest.raises(DataError, match="in one data folder"):
        ingest(data, progress=False)


def test_hdf5_images_in_loader_workers(data24):
    """Each worker opens its own handle; two workers give what one process gives."""
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.loader import make_loader
    from melanoma.inputs.transforms import pipeline_transforms

    table = ingest(data24, progress=False).head(24)
    _, val_tf = pipeline_transforms(32, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "reference")
    dataset = LesionDataset(table, val_tf)
    one = [b["image"] for b in make_loader(dataset, 8, 0)]
    two = [b["image"] for b in make_loader(dataset, 8, 2)]
    assert all(np.allclose(a.numpy(), b.numpy()) for a, b in zip(one, two, strict=True))
    assert len(one) == 3 and one[0].shape[-1] == 32


class _HandleOwners(torch.utils.data.Dataset):
    """Each item: the reading process's id and the id of the process that opened the HDF5 handle used."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from melanoma.inputs import decode

        read_rgb(self.paths[i])
        opener = decode._HDF5_HANDLES[decode.split_hdf5(self.paths[i])[0]][0]
        return torch.tensor([os.getpid(), opener])


def test_each_loader_worker_opens_its_own_handle(data24):
    paths = ingest(data24, verify="none", progress=False).image_path.head(16).tolist()
    read_rgb(paths[0])  # the parent holds a handle before the workers start
    from melanoma.inputs.loader import make_loader

    pairs = torch.cat(list(make_loader(_HandleOwners(paths), 4, 2)))
    assert (pairs[:, 0] == pairs[:, 1]).all() and (pairs[:, 0] != os.getpid()).all()
    assert len(set(pairs[:, 0].tolist())) == 2


def test_train_only_columns_can_never_be_features(data24):
    for column in TRAIN_ONLY_2024:
        with pytest.raises(LeakError, match=column):
            check_features([column])
        with pytest.raises(LeakError, match=column):
            GbdtConfig(features=[column])
    with pytest.raises(ValueError, match="not a column of test-metadata"):
        check_features(["my_column"])
    from melanoma.data.isic2024 import metadata

    meta = metadata(data24 / "isic2024")
    features = build_features(meta)
    assert not set(features.columns) & set(TRAIN_ONLY_2024)
    # The features do not change when every train-only column is scrambled.
    scrambled = meta.copy()
    rng = np.random.default_rng(0)
    for column in TRAIN_ONLY_2024:
        scrambled[column] = scrambled[column].to_numpy()[rng.permutation(len(meta))]
    pd.testing.assert_frame_equal(build_features(scrambled), features)


def test_per_patient_features_by_hand():
    meta = pd.DataFrame({c: 1.0 for c in COLUMNS_2024_TEST}, index=range(5))
    meta["patient_id"] = ["a", "a", "a", "b", "b"]
    meta["anatom_site_general"] = ["head/neck", "head/neck", "anterior torso", "head/neck", "head/neck"]
    for c in ("sex", "tbp_tile_type", "tbp_lv_location", "tbp_lv_location_simple", "attribution"):
        meta[c] = "x"
    meta["tbp_lv_areaMM2"] = [1.0, 2.0, 3.0, 10.0, 30.0]
    meta["tbp_lv_L"], meta["tbp_lv_Lext"] = [50.0, 40.0, 45.0, 60.0, 61.0], [60.0] * 5
    meta["tbp_lv_minorAxisMM"], meta["clin_size_long_diam_mm"] = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0] * 5
    f = build_features(meta)
    assert f.tbp_lv_areaMM2_patient_z.tolist() == pytest.approx([-1, 0, 1, -0.7071068, 0.7071068], abs=1e-5)
    assert f.tbp_lv_areaMM2_patient_minmax.tolist() == pytest.approx([0, 0.5, 1, 0, 1], abs=1e-5)
    assert f.luminance_contrast.tolist() == [10.0, 20.0, 15.0, 0.0, 1.0]
    assert f.lesion_size_ratio.tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert f.patient_lesions.tolist() == [3, 3, 3, 2, 2]
    assert f.patient_site_lesions.tolist() == [2, 2, 1, 2, 2]
    assert str(f.sex.dtype) == "category"


def test_tree_runs_are_read_like_image_runs(data24, tmp_path):
    from melanoma.evaluation.calibration import calibrate
    from melanoma.evaluation.ensemble import ensemble
    from melanoma.evaluation.evaluate import evaluate
    from melanoma.report import report
    from melanoma.rundir import latest_oof, run_config

    run = tmp_path / "gbdt"
    result = train_gbdt(data24, GbdtConfig(out=str(run), n_estimators=60, k_folds=3), progress=False)
    assert result["rows"] == 900 and result["malignant"] == 27
    assert result["auc"] > 0.75  # the malignant lesions stand out from their patients
    for k in range(3):
        assert (run / f"fold{k}/lightgbm.txt").read_text().startswith("tree")
    assert run_config(run)["kind"] == "gbdt"
    oof = latest_oof(run)
    assert set(oof.image_name) == set(pd.read_csv(data24 / "isic2024/train-metadata.csv").isic_id)
    assert list(pd.read_csv(run / "submission.csv").columns) == ["isic_id", "target"]  # Kaggle's header
    evaluated = evaluate(run, None, tta=True, n_boot=100)  # a tree run has no TTA to do: scored as it is
    pauc = next(r for r in evaluated.scores if r["metric"] == "pauc_80")
    assert pauc["value"] == pytest.approx(partial_auc(oof.malignant, oof.target == 1))
    assert pauc["low"] <= pauc["value"] <= pauc["high"] and {r["rows"] for r in evaluated.scores} == {"all"}
    assert calibrate(run).temperature > 0
    from melanoma.card import write_card
    from melanoma.evaluation.operating_points import operating_points

    point = operating_points(run, n_boot=50).points[-1]
    assert point.sensitivity >= point.target_sensitivity
    card = write_card(run, data24).read_text()
    assert "LightGBM" in card and "total-body photographs" in card and "| ISIC 2024 |" in card
    sub, table = ensemble([run, run], out=tmp_path / "ens.csv")
    assert table.oof_auc.iloc[-1] == pytest.approx(table.oof_auc.iloc[0], abs=1e-9)  # itself twice: itself
    page = report(run).read_text()
    assert "pauc_80" in page
    # a report and card made for a tree run on ISIC 2024, not a 2020 image run's
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<details>.*?</details>|<img[^>]*>", "", page, flags=re.S))
    assert (
        "LightGBM (melanoma gbdt) on" in text and "benign / malignant" in text and "input None px" not in text
    )
    assert "2020 rows" not in text and "auc_20" not in text and "melanomas" not in text
    assert "Feature importances" in text and "melanoma explain" not in text and "malignant lesions" in text
    card = write_card(run, data24).read_text()
    assert "Software: melanoma ?" not in card and f"Software: melanoma {__version__}" in card
    assert '"lightgbm"' in card.splitlines()[2] and "timm" not in card.splitlines()[2]
    assert "melanomas" not in card and "Grad-CAM" not in card and "10.1038/s41597-024-03743-w" in card
    assert "## What the model uses" in card and "ISIC 2020 data" not in card
    importance = pd.read_csv(run / "feature_importance.csv")
    assert importance.feature[:10].str.endswith(("_patient_z", "_patient_minmax")).any()
    json.loads((run / "config.json").read_text())["features"]


def test_centre_folds_hold_out_whole_centres(data24, tmp_path):
    run = tmp_path / "centre"
    train_gbdt(data24, GbdtConfig(out=str(run), fold_method="centre", n_estimators=30), progress=False)
    meta = pd.read_csv(data24 / "isic2024/train-metadata.csv").set_index("isic_id")
    oof = pd.read_csv(run / "folds.csv").set_index("image_name")
    pairs = pd.crosstab(oof.fold, meta.attribution.loc[oof.index])
    assert ((pairs > 0).sum(axis=1) == 1).all() and ((pairs > 0).sum(axis=0) == 1).all()
    # The same directory never mixes two runs' folds; the data folder is never written into.
    with pytest.raises(ValueError, match="other settings"):
        train_gbdt(data24, GbdtConfig(out=str(run), fold_method="patient", n_estimators=30), progress=False)
    with pytest.raises(ValueError, match="isic2024"):
        train_gbdt(data24, GbdtConfig(out=str(data24 / "isic2024"), n_estimators=30), progress=False)


def _fake_image_run(run: Path, folds: pd.DataFrame, table: pd.DataFrame, score: np.ndarray) -> None:
    """An image run directory as `melanoma train` + `predict` leave it, with chosen scores."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"scheme": "mb", "backbone": "x", "k_folds": 3}))
    train = table[table.split == "train"].drop(columns="fold", errors="ignore").merge(folds, on="image_name")
    by_name = dict(zip(table.image_name, score, strict=True))
    for k in sorted(train.fold.unique()):
        part = train[train.fold == k]
        s = part.image_name.map(by_name).to_numpy()
        (run / f"fold{k}").mkdir()
        pd.DataFrame({"image_name": part.image_name, "fold": k, "is_ext": 0, "target": part.target,
                      "benign": 1 - s, "malignant": s}).to_csv(run / f"fold{k}/oof.csv", index=False)  # fmt: skip
    test = table[table.split == "test"]
    s = test.image_name.map(by_name).to_numpy()
    pd.DataFrame({"image_name": test.image_name, "benign": 1 - s, "malignant": s}).to_csv(
        run / "test_probs.csv", index=False
    )


def test_stacking_uses_the_image_scores_and_refuses_other_folds(data24, tmp_path):
    from melanoma.data.folds import write_folds

    data = _copy(data24, tmp_path)
    table, _ = write_folds(data, "triple", 3, 0, None, progress=False)
    folds = pd.read_csv(data / "folds.csv")
    rng = np.random.default_rng(1)
    telling = np.where(table.target == 1, 0.7, 0.3) + rng.normal(
        0, 0.05, len(table)
    )  # an image model that knows
    _fake_image_run(tmp_path / "image", folds, table, np.clip(telling, 0, 1))
    run = tmp_path / "stacked"
    result = train_gbdt(
        data, GbdtConfig(out=str(run), image_run=str(tmp_path / "image"), n_estimators=40), False
    )
    assert result["top_features"][0].startswith("image_score") and result["auc"] > 0.99
    shifted = folds.assign(fold=(folds.fold + 1) % 3)
    _fake_image_run(tmp_path / "other", shifted, table, np.clip(telling, 0, 1))
    with pytest.raises(ValueError, match="folds differ"):
        train_gbdt(data, GbdtConfig(out=str(tmp_path / "bad"), image_run=str(tmp_path / "other")), False)


def test_epoch_sampler_repeats_positives_and_draws_negatives():
    from melanoma.training.sampling import EpochSampler

    positive = np.zeros(1000, dtype=bool)
    positive[[3, 500, 999]] = True
    sampler = EpochSampler(positive, pos_oversample=4, neg_per_epoch=100, seed=7)
    first = sampler.indices()
    assert len(first) == len(sampler) == 112
    assert sorted(np.unique(first[positive[first]], return_counts=True)[1]) == [4, 4, 4]
    assert len(set(first[~positive[first]])) == 100  # drawn without replacement
    sampler.set_epoch(1)
    assert set(sampler.indices()[~positive[sampler.indices()]]) != set(first[~positive[first]])  # afresh
    sampler.set_epoch(0)
    assert (sampler.indices() == first).all()  # seeded by epoch: a resumed run sees the same
    shards = [list(EpochSampler(positive, 4, 100, seed=7, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 56 and sorted(shards[0] + shards[1]) == sorted(first.tolist())


def test_partial_auc_on_a_hand_made_case():
    # Four of five malignant lesions above every benign one; the fifth above one benign only.
    # The ROC curve sits at TPR 0.8 until FPR 0.8, then reaches 1: the area above TPR 0.8 is
    # (1 - 0.8) x (1.0 - 0.8) = 0.04.
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    score = [0.9, 0.8, 0.7, 0.6, 0.1, 0.5, 0.4, 0.3, 0.2, 0.05]
    assert partial_auc(score, y) == pytest.approx(0.04)


def test_prepare_refuses_and_dedup_keys_the_hdf5_file(data24, tmp_path):
    from melanoma.data.dedup import embedding_key
    from melanoma.data.prepare import prepare

    with pytest.raises(ValueError, match="nothing to prepare"):
        prepare(data24, tmp_path / "out", sizes=(64,), progress=False)
    table = ingest(data24, verify="none", progress=False)
    key = embedding_key(table, 64)
    assert key == embedding_key(table, 64) and key != embedding_key(table.head(10), 64)


def test_the_commands(data24, tmp_path):
    from typer.testing import CliRunner

    from melanoma.cli import app

    runner = CliRunner()
    out = tmp_path / "synth"
    r = runner.invoke(
        app,
        ["synth", str(out), "--isic2024", "--n-train", "200", "--n-test", "5", "--malignant-rate", "0.05"],
    )
    assert r.exit_code == 0, r.output
    assert (
        "200 ISIC 2024 train lesions (10 malignant" in r.output
        and (out / "isic2024/train-image.hdf5").is_file()
    )
    run = tmp_path / "gbdt"
    r = runner.invoke(app, ["gbdt", str(data24), "--out", str(run), "--k-folds", "3", "--n-estimators", "30"])
    assert r.exit_code == 0, r.output
    assert "pAUC above 80% TPR" in r.output and "top-15 per-patient sensitivity" in r.output
    r = runner.invoke(app, ["evaluate", str(run), "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    assert "is a tree run" in r.output and "pauc_80" in r.output
    r = runner.invoke(
        app, ["gbdt", str(data24), "--out", str(tmp_path / "leak"), "--features", "iddx_1,age_approx"]
    )
    assert r.exit_code == 2 and "iddx_1: train-only column" in r.output and not (tmp_path / "leak").exists()
    r = runner.invoke(app, ["ingest", str(data24)])
    assert r.exit_code == 0 and "malignant" in r.output


def test_a_tree_run_is_validated_on_another_2024_folder(data24, tmp_path):
    from typer.testing import CliRunner

    from melanoma.cli import app

    run = tmp_path / "run"
    train_gbdt(data24, GbdtConfig(out=str(run), n_estimators=40, k_folds=3), progress=False)
    other = tmp_path / "other"
    same_names = {**SMALL.__dict__, "seed": SMALL.seed + 50}
    generate_2024(tmp_path / "renamed-not", Synth2024Config(**same_names), progress=False)
    r = CliRunner().invoke(
        app, ["validate", str(run), "--data", str(tmp_path / "renamed-not"), "--bootstrap", "5"]
    )
    assert r.exit_code == 2 and "image(s) the run trained on" in r.output  # found by name: every one
    generate_2024(other, Synth2024Config(**{**same_names, "id_offset": 2_000_000}), progress=False)
    r = CliRunner().invoke(
        app, ["validate", str(run), "--data", str(other), "--name", "later", "--bootstrap", "30"]
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "validation_later.json").read_text())
    table = ingest(other, verify="none", progress=False)
    labelled = table[table.split == "train"]
    assert saved["images"] == len(labelled) and saved["positives"] == int(labelled.target.sum())
    from melanoma.tabular.gbdt import score_rows

    scores = score_rows(run, other, labelled)  # the boosters on the other folder's own features
    from melanoma.metrics import melanoma_auc

    assert saved["auc"]["value"] == pytest.approx(melanoma_auc(scores.mean(0), labelled.target == 1))
    assert saved["input_checks"] == {} and "estimated skin tone (ITA)" in {
        g["column"] for g in saved["subgroups"]
    }


def test_a_bagged_blend_of_three_libraries_is_a_run_its_files_score_again(data24, tmp_path):
    from melanoma.card import write_card
    from melanoma.report import report
    from melanoma.tabular.gbdt import score_rows

    run = tmp_path / "blend"
    cfg = GbdtConfig(out=str(run), k_folds=3, models=["lightgbm", "xgboost", "catboost"], bags=2,
                     pos_rate=0.003, neg_rate=0.05, early_stopping=10, blend="fitted", n_estimators=40)  # fmt: skip
    result = train_gbdt(data24, cfg, progress=False)
    assert result["rows"] == 900 and result["auc"] > 0.65  # 27 malignant lesions: a noisy AUC
    for k in range(3):
        names = {p.name for p in (run / f"fold{k}").iterdir()}
        assert names == {"lightgbm.txt", "lightgbm_1.txt", "xgboost.json", "xgboost_1.json", "catboost.json",
                         "catboost_1.json", "oof.csv"}  # fmt: skip
    weights = pd.read_csv(run / "blend_weights.csv")
    assert set(weights.model) == {"lightgbm", "xgboost", "catboost"}
    assert weights.groupby("fold").weight.sum().tolist() == pytest.approx([1, 1, 1])
    by_model = pd.read_csv(run / "oof_by_model.csv")
    assert len(by_model) == 900 and {"lightgbm", "xgboost", "catboost"} <= set(by_model.columns)
    # the saved files, read back, give each fold's blended out-of-fold scores exactly
    table = ingest(data24, verify="none", progress=False).reset_index(drop=True)
    scores = score_rows(run, data24, table, progress=False)
    at = pd.Series(range(len(table)), index=table.image_name)
    for k in range(3):
        oof = pd.read_csv(run / f"fold{k}/oof.csv")
        np.testing.assert_allclose(scores[k][at[oof.image_name].to_numpy()], oof.malignant, atol=1e-12)
    card = write_card(run, data24).read_text()
    assert (
        "LightGBM + XGBoost + CatBoost, 2 bags each, fitted blend" in card
        and "early stopping after 10" in card
    )
    assert "LightGBM + XGBoost + CatBoost" in report(run).read_text()
    log = (run / "log.txt").read_text()
    assert "xgboost AUC" in log and "catboost AUC" in log


def test_the_label_reaches_no_tree_by_another_route(data24, tmp_path):
    """Every train-only column but the label scrambled (or set to a copy of the label): the trees'
    out-of-fold scores are the same to the last digit."""
    base = tmp_path / "base"
    cfg = {"k_folds": 3, "n_estimators": 30, "models": ["lightgbm", "xgboost"]}
    train_gbdt(data24, GbdtConfig(out=str(base), **cfg), progress=False)
    meta_path = tmp_path / "data/isic2024/train-metadata.csv"
    for leak in ("scramble", "label"):
        data = tmp_path / "data"
        shutil.rmtree(data, ignore_errors=True)
        data = _copy(data24, tmp_path)
        meta = pd.read_csv(meta_path)
        rng = np.random.default_rng(3)
        for column in TRAIN_ONLY_2024:
            if column != "target":
                values = meta[column].to_numpy()
                meta[column] = values[rng.permutation(len(meta))] if leak == "scramble" else meta.target
        meta.to_csv(meta_path, index=False)
        run = tmp_path / leak
        train_gbdt(data, GbdtConfig(out=str(run), **cfg), progress=False)
        for k in range(3):
            pd.testing.assert_frame_equal(
                pd.read_csv(run / f"fold{k}/oof.csv"), pd.read_csv(base / f"fold{k}/oof.csv")
            )


def test_several_image_runs_add_their_scores_in_context(data24, tmp_path):
    from melanoma.data.folds import write_folds

    data = _copy(data24, tmp_path)
    table, _ = write_folds(data, "triple", 3, 0, None, progress=False)
    folds = pd.read_csv(data / "folds.csv")
    rng = np.random.default_rng(2)
    for name, noise in (("one", 0.1), ("two", 0.3)):
        score = np.clip(np.where(table.target == 1, 0.6, 0.4) + rng.normal(0, noise, len(table)), 0, 1)
        _fake_image_run(tmp_path / name, folds, table, score)
    run = tmp_path / "stacked"
    runs = [str(tmp_path / "one"), str(tmp_path / "two")]
    train_gbdt(data, GbdtConfig(out=str(run), image_run=runs, n_estimators=30), progress=False)
    features = json.loads((run / "config.json").read_text())["features"]
    for name in ("image_score", "image2_score"):
        assert {name, f"{name}_patient_ratio", f"{name}_patient_z", f"{name}_centre_z"} <= set(features)
    assert "image_score_spread" in features
    plain = tmp_path / "plain"
    train_gbdt(data, GbdtConfig(out=str(plain), image_run=runs, drop_features=["group:image_context"],
                                n_estimators=30), progress=False)  # fmt: skip
    kept = json.loads((plain / "config.json").read_text())["features"]
    assert [c for c in kept if c.startswith("image")] == ["image_score", "image2_score"]
    _fake_image_run(
        tmp_path / "other", folds.assign(fold=(folds.fold + 1) % 3), table, np.full(len(table), 0.5)
    )
    with pytest.raises(ValueError, match="folds differ"):
        train_gbdt(
            data, GbdtConfig(out=str(tmp_path / "bad"), image_run=[runs[0], str(tmp_path / "other")]), False
        )


def test_indeterminate_rows_can_be_left_out_of_fitting_but_are_scored(tmp_path):
    cfg24 = Synth2024Config(
        n_train=600, n_test=5, malignant_rate=0.04, centres=2, seed=2, indeterminate_rate=0.05
    )
    generate_2024(tmp_path / "data", cfg24, progress=False)
    meta = pd.read_csv(tmp_path / "data/isic2024/train-metadata.csv")
    unsure = meta.iddx_1 == "Indeterminate"
    assert 10 < unsure.sum() < 60 and (meta.target[unsure] == 0).all()
    run = tmp_path / "run"
    train_gbdt(tmp_path / "data", GbdtConfig(out=str(run), k_folds=3, n_estimators=20, drop_indeterminate=True),
               progress=False)  # fmt: skip
    log = (run / "log.txt").read_text()
    assert f"{unsure.sum()} Indeterminate row(s) left out of fitting" in log
    oof = pd.concat(pd.read_csv(run / f"fold{k}/oof.csv") for k in range(3))
    assert set(oof.image_name) == set(meta.isic_id)  # still scored, every one
    fitted = sum(int(re.search(r"fold \d: (\d+) train", line).group(1)) for line in log.splitlines()
                 if line.startswith("fold"))  # fmt: skip
    assert fitted == 2 * (600 - unsure.sum())  # each row fits the two folds it is not in, unless unsure
