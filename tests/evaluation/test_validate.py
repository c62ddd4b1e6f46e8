"""External validation (evaluation/validate.py) and the external sets synth writes (synthetic/centre.py)."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from melanoma.evaluation.validate import held_point
from melanoma.synthetic.centre import SHIFTED_DEVICE, SHIFTED_TONE_SKEW, CentreConfig, generate_centre
from tests.helpers import cli, refused


@pytest.fixture(scope="module")
def centres(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("centres")
    made = {}
    for centre, seed in (("same", 21), ("shifted", 22)):
        made[centre] = root / centre
        generate_centre(made[centre], CentreConfig(n_images=160, melanoma_rate=0.1, centre=centre, seed=seed),
                        workers=1, progress=False)  # fmt: skip
    return made


def test_a_frozen_point_is_flagged_when_its_sensitivity_does_not_hold():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.1
    held = np.where(y, rng.normal(2, 1, 4000), rng.normal(0, 1, 4000))
    threshold = np.quantile(held[y], 0.05)  # 95% of these melanomas at or above it
    per_fold = np.stack([held + rng.normal(0, 0.3, 4000) for _ in range(3)])
    point = held_point(held, y, per_fold, 0.95, threshold, n_boot=200, seed=0)
    assert point["sensitivity_low"] <= 0.95 <= point["sensitivity_high"] and not point["flagged"]
    singles = [np.mean(p[y] >= threshold) for p in per_fold]
    assert point["single_fold_sensitivity"] == pytest.approx(np.mean(singles))
    assert point["single_fold_range"] == pytest.approx([min(singles), max(singles)])
    lower = np.where(y, held - 0.8, held)  # the melanomas score lower elsewhere: the threshold fails
    failed = held_point(lower, y, per_fold - 0.8 * y, 0.95, threshold, n_boot=200, seed=0)
    assert failed["flagged"] and failed["sensitivity_high"] < 0.95
    assert failed["threshold"] == threshold  # frozen: not found again


def test_the_shifted_centre_is_another_device_and_another_population(centres):
    def look(folder):
        files = sorted((folder / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:60]
        images = [cv2.imread(str(f))[:, :, ::-1].astype(float) for f in files]
        sharp = np.mean([cv2.Laplacian(cv2.cvtColor(i.astype(np.uint8), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                         for i in images])  # fmt: skip
        warm = np.mean([i[..., 0].mean() / i[..., 2].mean() for i in images])
        return sharp, warm, np.mean([i.mean(axis=2).std() for i in images])

    (sharp_same, warm_same, spread_same) = look(centres["same"])
    (sharp_shifted, warm_shifted, spread_shifted) = look(centres["shifted"])
    assert sharp_shifted < 0.5 * sharp_same  # blur and a lower resolution
    assert warm_shifted < warm_same * 0.95  # its white balance: bluer
    assert spread_shifted < spread_same * 0.85  # its tone curve: flatter
    from melanoma.synthetic.render import sample_patient, skin_ita

    rng = np.random.default_rng(0)  # its population: darker skin (per patient, drawn as synth draws it)
    base = np.array([skin_ita(sample_patient(rng).skin) for _ in range(3000)])
    other = np.array([skin_ita(sample_patient(rng, SHIFTED_TONE_SKEW).skin) for _ in range(3000)])
    assert np.mean(other < 28) > 2 * np.mean(base < 28) and np.median(other) < np.median(base) - 8
    truth = pd.read_csv(centres["shifted"] / "truth" / "images.csv")
    assert truth.skin_ita.notna().all() and len(truth) == 160 + 20
    tables = {c: pd.read_csv(f / "isic2020" / "train.csv") for c, f in centres.items()}
    acral = {c: (t.anatom_site_general_challenge == "palms/soles").mean() for c, t in tables.items()}
    assert acral["shifted"] > 0.08 > acral["same"]
    shift = json.loads((centres["shifted"] / "truth" / "config.json").read_text())["shift"]
    assert shift["device"]["gains"] == list(SHIFTED_DEVICE.gains) and shift["atypia"]["melanoma"] == [
        2.0,
        3.6,
    ]
    assert json.loads((centres["same"] / "truth" / "config.json").read_text())["shift"] is None


def test_validate_saves_what_held_and_leaves_out_training_images(tiny_runs, tiny_data, centres, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    external = tmp_path / "external"
    shutil.copytree(centres["same"], external)
    train = pd.read_csv(tiny_data / "isic2020" / "train.csv")
    ours = pd.read_csv(external / "isic2020" / "train.csv")
    copied = train.iloc[:2].copy()  # two training images under their own names
    renamed = train.iloc[[2]].assign(image_name="ISIC_9999990")  # and one under a new name
    for row in [*copied.itertuples(), *renamed.itertuples()]:
        source = tiny_data / "isic2020" / "jpeg" / "train" / f"{train.image_name[row.Index]}.jpg"
        shutil.copy(source, external / "isic2020" / "jpeg" / "train" / f"{row.image_name}.jpg")
    pd.concat([ours, copied, renamed]).to_csv(external / "isic2020" / "train.csv", index=False)
    args = ("validate", run, "--data", external, "--name", "clinic-a", "--no-tta", "--bootstrap", 50)
    refused(*cli(*args, "--refuse-overlap", "--train-data", tiny_data), "3 image(s) the run trained on")
    code, out = cli(*args)  # runs trained by train() record no data folder: names only, said so
    assert code == 0, out
    saved = json.loads((run / "validation_clinic-a.json").read_text())
    assert saved["overlap"]["by_name"] == 2 and "content not checked" in saved["overlap"]["note"]
    code, out = cli(*args, "--train-data", tiny_data)
    assert code == 0, out
    saved = json.loads((run / "validation_clinic-a.json").read_text())
    overlap = saved["overlap"]
    assert overlap["by_name"] == 2 and overlap["by_content"] == 1 and "ISIC_9999990" in overlap["left_out"]
    assert saved["images"] == len(ours) and saved["positives"] == int(ours.target.sum())
    assert [p["target_sensitivity"] for p in saved["points"]] == [0.9, 0.95]
    from melanoma.evaluation.operating_points import oof_melanoma, threshold_at

    score, is_mel, _ = oof_melanoma(run)  # the run's latest out-of-fold scores (TTA ones, if evaluated)
    assert saved["points"][1]["threshold"] == pytest.approx(threshold_at(score, is_mel, 0.95))
    assert saved["auc"]["low"] <= saved["auc"]["value"] <= saved["auc"]["high"]
    groups = pd.DataFrame(saved["subgroups"])
    assert {"sex", "age_band", "anatom_site", "estimated skin tone (ITA)"} <= set(groups.column)
    assert "Flagged" not in out or any(p["flagged"] for p in saved["points"])
    assert cli("report", run)[0] == 0 and "External validation: clinic-a" in (run / "report.html").read_text()
    assert cli("card", run)[0] == 0
    card = (run / "MODEL_CARD.md").read_text()
    assert "## External validation" in card and "clinic-a (" in card
    refused(*cli("validate", run, "--data", external, "--name", "../x"), "a validation's name is letters")


def test_quality_flags_on_made_pictures():
    from melanoma.inputs.quality import quality_flags

    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (256, 256)), (0, 0), 1.0)[..., None]
    skin = np.array([190.0, 140.0, 115.0])  # a skin colour, with texture
    texture = np.clip(skin + noise, 0, 255).astype(np.uint8)
    assert quality_flags(texture, (1024, 768), 384) == []
    grey = np.repeat(texture.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert quality_flags(grey, (1024, 768), 384) == ["no colour (greyscale)"]
    assert quality_flags(cv2.GaussianBlur(texture, (0, 0), 6), (1024, 768), 384) == ["blurry"]
    assert "under-exposed" in quality_flags((texture * 0.1).astype(np.uint8), (1024, 768), 384)
    bright = np.clip(texture.astype(int) + 120, 0, 255).astype(np.uint8)
    assert "over-exposed" in quality_flags(bright, (1024, 768), 384)
    assert quality_flags(texture, (150, 120), 384) == ["too small (150x120 for 384 px)"]


def test_input_checks_flag_photographs_and_another_clinic(tiny_runs, tiny_data, centres, tmp_path):
    import skimage.data

    from melanoma.data.ingest import ingest
    from melanoma.evaluation.ood import PASS, fit
    from melanoma.evaluation.predict import meta_matrix, predict_images

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    table = tiny_runs["table"]
    info = fit(run, table, meta_matrix(table, run), progress=False)
    assert sorted(info["folds"]) == ["0", "1"] and info["pass"] == PASS
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "moon", "page", "text", "clock",
             "immunohistochemistry", "hubble_deep_field"]  # fmt: skip
    for name in names:
        picture = np.asarray(getattr(skimage.data, name)())
        cv2.imwrite(str(photos / f"{name}.png"), picture if picture.ndim == 2 else picture[:, :, ::-1])
    got = predict_images(run, [photos], tta=False, progress=False)
    assert got.flag.mean() >= 0.9, got[["image_name", "quality", "ood_distance"]]
    held_out = table[table.split == "test"].image_path.head(40).map(Path).tolist()  # lesions it never saw
    lesions = predict_images(run, held_out, tta=False, progress=False)
    assert lesions.flag.mean() <= 0.1, lesions[["image_name", "quality", "ood_distance"]]
    rates = {}
    for centre, folder in centres.items():
        images = sorted((folder / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:60]
        rates[centre] = predict_images(run, images, tta=False, progress=False).flag.mean()
    assert rates["shifted"] > rates["same"], rates
    # validate counts them, and lists the flagged ones (none dropped)
    external = ingest(centres["shifted"], verify="none", progress=False)
    from melanoma.evaluation.validate import validate

    result = validate(run, centres["shifted"], external, "shifted", tta=False, n_boot=20, progress=False)
    checks = result.input_checks
    assert checks["images"] == result.images and checks["flagged"] == len(checks["flagged_images"]) > 0
    assert "input checks flagged" in result.summary()
