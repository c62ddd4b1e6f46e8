import hashlib
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest

from melanoma.synthetic.generate import SynthConfig, generate
from melanoma.targets import DIAGNOSES_2020
from tests.conftest import TINY


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout_and_exact_column_names(tiny_data):
    for rel in [
        "isic2020/train.csv", "isic2020/test.csv", "isic2020/jpeg/train", "isic2020/jpeg/test",
        "isic2019/ISIC_2019_Training_GroundTruth.csv", "isic2019/ISIC_2019_Training_Metadata.csv",
        "isic2019/ISIC_2019_Training_Input", "truth/duplicates.csv", "truth/images.csv",
    ]:  # fmt: skip
        assert (tiny_data / rel).exists(), rel
    header = lambda rel: (tiny_data / rel).read_text().splitlines()[0]  # noqa: E731
    assert header("isic2020/train.csv") == (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
    )
    assert header("isic2020/test.csv") == "image_name,patient_id,sex,age_approx,anatom_site_general_challenge"
    assert header("isic2019/ISIC_2019_Training_GroundTruth.csv") == "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
    assert header("isic2019/ISIC_2019_Training_Metadata.csv") == (
        "image,age_approx,anatom_site_general,lesion_id,sex"
    )
    train = pd.read_csv(tiny_data / "isic2020/train.csv")
    for name in train.image_name:
        assert (tiny_data / "isic2020/jpeg/train" / f"{name}.jpg").is_file()


def test_same_seed_gives_byte_identical_output(tmp_path, tiny_data):
    again = tmp_path / "again"
    generate(again, TINY, workers=2, progress=False)  # other worker count, same bytes
    assert _digest(again) == _digest(tiny_data)
    other = tmp_path / "other"
    generate(other, replace(TINY, seed=TINY.seed + 1), workers=1, progress=False)
    assert _digest(other)["isic2020/train.csv"] != _digest(tiny_data)["isic2020/train.csv"]


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium")
    cfg = SynthConfig(n_train_2020=1200, n_test_2020=100, n_2019=500, duplicate_rate=0.02, seed=11)
    generate(root, cfg, progress=False)
    return root


def test_2020_label_and_patient_properties(medium):
    train = pd.read_csv(medium / "isic2020/train.csv")
    assert set(train.diagnosis) == set(DIAGNOSES_2020)  # every diagnosis string is present
    rate = (train.diagnosis == "melanoma").mean()
    assert 0.012 < rate < 0.03
    assert (train.target == (train.diagnosis == "melanoma")).all()
    assert (train.benign_malignant == np.where(train.target == 1, "malignant", "benign")).all()
    per_patient = train.groupby("patient_id").size()
    assert per_patient.median() >= 3 and per_patient.max() >= 15 and per_patient.min() <= 2
    for col in ["sex", "age_approx", "anatom_site_general_challenge"]:
        assert train[col].isna().sum() >= 1, col  # gaps like the real data
    assert (train.age_approx.dropna() % 5 == 0).all()
    test = pd.read_csv(medium / "isic2020/test.csv")
    assert not set(test.patient_id) & set(train.patient_id)


def test_2019_label_properties(medium):
    truth = pd.read_csv(medium / "isic2019/ISIC_2019_Training_GroundTruth.csv")
    codes = truth.columns[1:]
    assert (truth[codes].sum(axis=1) == 1).all()
    assert (truth[codes.drop("UNK")].sum() >= 1).all()  # the eight classes present
    assert (
        truth.UNK.sum() == 0
    )  # and UNK never, as in the real ground truth (the original would build 10 classes)
    assert 0.14 < truth.MEL.mean() < 0.22
    meta = pd.read_csv(medium / "isic2019/ISIC_2019_Training_Metadata.csv")
    assert list(meta.image) == list(truth.image)
    assert {"anterior torso", "posterior torso"} <= set(meta.anatom_site_general.dropna())
    assert meta.anatom_site_general.isna().mean() > 0.05
    assert meta.image.str.endswith("_downsampled").any()


def test_sizes_and_aspect_ratios_vary(medium):
    images = pd.read_csv(medium / "truth/images.csv")
    ratios = (images.width / images.height).round(2)
    assert ratios.nunique() >= 5 and (ratios > 1).any() and (ratios < 1).any()
    name = images.image_name.iloc[0]
    path = next(medium.rglob(f"{name}.jpg"))
    h, w = cv2.imread(str(path)).shape[:2]
    assert (w, h) == (images.width.iloc[0], images.height.iloc[0])


def test_appearance_cues_follow_the_diagnosis(medium):
    images = pd.read_csv(medium / "truth/images.csv")
    mel, nev = images[images.name == "melanoma"], images[images.name == "nevus"]
    for cue in ["atypia", "asymmetry", "border", "n_colours", "radius", "deviation"]:
        assert mel[cue].mean() > nev[cue].mean() + 0.05 * nev[cue].std(), cue
    # Artefacts are drawn without looking at the diagnosis.
    assert abs(mel.vignette.mean() - nev.vignette.mean()) < 0.2


def _mae_best_orientation(a, b):
    a = cv2.resize(a, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    b = cv2.resize(b, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    candidates = [b, b[::-1], b[:, ::-1], b[::-1, ::-1]]
    candidates += [c.transpose(1, 0, 2) for c in candidates]
    return min(np.abs(a - c).mean() for c in candidates)


def test_planted_duplicates_are_listed_and_look_alike(medium):
    dups = pd.read_csv(medium / "truth/duplicates.csv")
    kinds = set()
    close, unrelated = [], []
    read = lambda name: cv2.imread(str(next(medium.rglob(f"{name}.jpg"))))  # noqa: E731
    groups = list(dups.groupby("group"))
    for _, g in groups:
        original = g[g.role == "original"].iloc[0]
        copy = g[g.role == "copy"].iloc[0]
        kinds.add((original.dataset, copy.dataset))
        close.append(_mae_best_orientation(read(original.image_name), read(copy.image_name)))
    for (_, g1), (_, g2) in zip(groups[:-1], groups[1:], strict=True):
        unrelated.append(_mae_best_orientation(read(g1.image_name.iloc[0]), read(g2.image_name.iloc[0])))
    assert {("isic2020_train", "isic2020_train"), ("isic2019", "isic2019"),
            ("isic2020_train", "isic2019"), ("isic2019", "isic2020_test")} <= kinds  # fmt: skip
    assert np.median(close) < 0.3 * np.median(unrelated)
    assert set(dups[dups.role == "copy"]["transform"]) >= {"hflip", "rescale", "crop"}


def test_real_sizes_on_request(tmp_path):
    cfg = SynthConfig(n_train_2020=20, n_test_2020=20, n_2019=20, duplicate_rate=0, sizes="real", seed=2)
    generate(tmp_path, cfg, progress=False)
    images = pd.read_csv(tmp_path / "truth/images.csv")
    assert images[["width", "height"]].max().max() >= 4000
    big = images.loc[(images.width * images.height).idxmax()]
    path = next(tmp_path.rglob(f"{big.image_name}.jpg"))
    assert cv2.imread(str(path)).shape[:2] == (big.height, big.width)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_test_2020": 5}, "n_test_2020 is 5: at least 20 images"),
        ({"melanoma_rate_2019": 0.0}, "melanoma_rate_2019 is 0.0: expected a share"),
        ({"sizes": "huge"}, "sizes must be one of small, real"),
    ],
)
def test_bad_options_are_refused_before_writing(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", replace(TINY, **change), progress=False)
    assert not (tmp_path / "out").exists()
