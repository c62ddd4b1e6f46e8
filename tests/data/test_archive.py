"""The ISIC Archive as isic-cli downloads it: the diagnosis hierarchy onto the classes, the image
types, the columns kept, the refusals, and a run on it whose model card counts its licences."""

import json
from pathlib import Path

import pandas as pd
import pytest

from melanoma.data.archive import vocabulary
from melanoma.data.checks import DataError
from melanoma.data.formats import EXTRAS_ARCHIVE
from melanoma.data.ingest import ingest
from melanoma.synthetic.archive import PATHS, SynthArchiveConfig, fitzpatrick_of, generate_archive
from melanoma.targets import ARCHIVE_PREFIXES, archive_name, class_names, encode
from tests.helpers import cli

MEL = "Malignant:Malignant melanocytic proliferations (Melanoma)"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "data"
    generate_archive(root, SynthArchiveConfig(n_lesions=120, clinical_rate=0.2, undiagnosed_rate=0.05, seed=4),
                     workers=1, progress=False)  # fmt: skip
    return root


def _edited(archive: Path, tmp_path: Path, edit) -> Path:
    """A copy of the download whose metadata.csv went through `edit` (a function of the table)."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(archive, copy)
    path = copy / "archive" / "metadata.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)
    return copy


def test_every_diagnosis_of_the_vocabulary_has_a_class():
    paths = vocabulary()
    assert len(paths) > 400  # isic-metadata's hierarchy, every level
    assert set(ARCHIVE_PREFIXES) <= paths, set(ARCHIVE_PREFIXES) - paths  # no prefix misspelt
    assert {p for name in PATHS.values() for p in name} <= paths  # synth writes real diagnoses
    nine = set(class_names("9c"))
    assert {archive_name(p) for p in paths} == nine  # every path maps, onto all nine classes
    expected = {
        f"{MEL}:Melanoma Invasive": "melanoma",
        f"{MEL}:Melanoma in situ:Melanoma in situ, Lentigo maligna type": "melanoma",
        "Benign:Benign melanocytic proliferations:Nevus:Nevus, Atypical, Dysplastic, or Clark": "nevus",
        "Malignant:Malignant adnexal epithelial proliferations - Follicular:Basal cell carcinoma:"
        "Basal cell carcinoma, Superficial": "BCC",
        "Malignant:Malignant epidermal proliferations:Squamous cell carcinoma in situ": "SCC",
        "Malignant:Malignant epidermal proliferations:Keratoacanthoma": "SCC",
        "Indeterminate:Indeterminate epidermal proliferations:Solar or actinic keratosis": "AK",
        "Benign:Benign epidermal proliferations:Seborrheic keratosis": "BKL",
        "Benign:Flat melanotic pigmentations - not melanocytic nevus:Lentigo NOS": "BKL",
        "Benign:Benign soft tissue proliferations - Fibro-histiocytic:Dermatofibroma:"
        "Dermatofibroma, Cellular": "DF",
        "Benign:Benign soft tissue proliferations - Vascular:Pyogenic granuloma": "VASC",
        "Benign:Hemorrhagic lesions:Hemorrhage": "VASC",
        # what ISIC 2019 had no class for, as the 2020 labels did
        "Benign:Flat melanotic pigmentations - not melanocytic nevus:Cafe au lait macule or patch": "unknown",
        "Indeterminate:Indeterminate melanocytic proliferations:Atypical melanocytic neoplasm": "unknown",
        "Benign:Benign soft tissue proliferations - Fibro-histiocytic:Angiofibroma": "unknown",
        "Malignant:Merkel cell proliferation": "unknown",
        "Benign": "unknown",
    }
    for path, name in expected.items():
        assert path in paths and archive_name(path) == name, path
    # scheme mb follows diagnosis_1 alone: a Merkel cell carcinoma is malignant, an actinic keratosis not
    assert archive_name("Malignant:Merkel cell proliferation", "mb") == "malignant"
    assert (
        archive_name("Indeterminate:Indeterminate epidermal proliferations:Solar or actinic keratosis", "mb")
        == "benign"
    )
    four = encode(pd.Series(["BCC", "melanoma", "BKL"]), "4c")
    assert [class_names("4c")[i] for i in four] == ["unknown", "melanoma", "BKL"]


def test_an_archive_download_reads_as_a_data_folder(archive):
    meta = pd.read_csv(archive / "archive" / "metadata.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(archive / "truth" / "images.csv").set_index("image_name")
    table = ingest(archive, verify="decode", progress=False)
    assert list(table.columns[-len(EXTRAS_ARCHIVE) :]) == EXTRAS_ARCHIVE
    dermoscopic = meta[meta.image_type == "dermoscopic"]
    assert 0 < (meta.image_type != "dermoscopic").sum() and sorted(table.image_name) == sorted(
        dermoscopic.isic_id
    )
    everything = ingest(archive, verify="none", progress=False, image_types=None)
    assert len(everything) == len(meta) and set(everything.image_type) == {
        "dermoscopic",
        "clinical: close-up",
    }
    rows = meta.set_index("isic_id").loc[table.image_name]
    joined = rows[[f"diagnosis_{k}" for k in range(1, 6)]].apply(
        lambda r: ":".join(v for v in r if v), axis=1
    )
    labelled = (joined != "").to_numpy()
    assert 0 < (~labelled).sum() < len(table)
    assert (table.split == "train").to_numpy().tolist() == labelled.tolist()
    assert (table.target[~labelled] == -1).all() and table.raw_diagnosis[~labelled].isna().all()
    assert table.raw_diagnosis[labelled].tolist() == joined[labelled].tolist()
    # the class is the one the image was drawn as (the generator's truth)
    assert table.diagnosis[labelled].tolist() == truth.loc[table.image_name[labelled], "name"].tolist()
    names = class_names("9c")
    assert [names[t] for t in table.target[labelled]] == table.diagnosis[labelled].tolist()
    for column in ("patient_id", "lesion_id", "attribution", "copyright_license", "sex"):
        assert table[column].fillna("").tolist() == rows[column].tolist(), column
    fitz = rows.fitzpatrick_skin_type
    assert table.fitzpatrick_skin_type.fillna("").tolist() == fitz.tolist() and (fitz != "").sum() > 10
    skin = truth.loc[table.image_name[fitz.to_numpy() != ""], ["skin_r", "skin_g", "skin_b"]]
    assert [fitzpatrick_of(tuple(s)) for s in skin.to_numpy()] == fitz[fitz != ""].tolist()
    assert set(table.anatom_site.dropna()) <= {"torso", "head/neck", "upper extremity", "lower extremity",
                                               "palms/soles", "oral/genital"}  # fmt: skip
    mb = ingest(archive, verify="none", progress=False, scheme="mb")
    malignant = joined[labelled].str.startswith("Malignant").map({True: "malignant", False: "benign"})
    assert mb.diagnosis[labelled].tolist() == malignant.tolist()


def test_what_the_archive_reader_refuses(archive, tmp_path):
    def unknown(t):
        t.loc[3, ["diagnosis_1", "diagnosis_2", "diagnosis_3"]] = [
            "Malignant",
            MEL.split(":")[1],
            "Melanoma Fancy",
        ]

    with pytest.raises(DataError) as err:
        ingest(_edited(archive, tmp_path / "a", unknown), verify="none", progress=False, image_types=None)
    meta = pd.read_csv(archive / "archive" / "metadata.csv", dtype=str)
    message = str(err.value)
    assert "1 row(s) have a diagnosis that the ISIC vocabulary (isic-metadata" in message
    assert f"line 5 ({meta.isic_id[3]}: {MEL}:Melanoma Fancy)" in message and "metadata.csv" in message

    def gap(t):
        t.loc[2, ["diagnosis_2", "diagnosis_3"]] = ["", "Nevus"]

    with pytest.raises(DataError, match=r"1 row\(s\) have a diagnosis level after an empty one.*line 4"):
        ingest(_edited(archive, tmp_path / "b", gap), verify="none", progress=False, image_types=None)

    def skin(t):
        t.loc[0, "fitzpatrick_skin_type"] = "7"

    with pytest.raises(
        DataError, match="have a fitzpatrick_skin_type other than I, II, III, IV, V, VI or empty"
    ):
        ingest(_edited(archive, tmp_path / "c", skin), verify="none", progress=False, image_types=None)
    with pytest.raises(
        DataError, match="unknown image type\\(s\\) dermoscopy asked for; the archive has dermoscopic"
    ):
        ingest(archive, verify="none", progress=False, image_types=["dermoscopy"])
    with pytest.raises(DataError, match="missing column\\(s\\) diagnosis_1"):
        ingest(_edited(archive, tmp_path / "d", lambda t: t.pop("diagnosis_1")),
               verify="none", progress=False)  # fmt: skip
    with pytest.raises(DataError, match="read as downloaded; there is no prepared jpeg-\\*-NxN copy"):
        ingest(archive, data_size=256, verify="none", progress=False)
    missing = _edited(archive, tmp_path / "e", lambda t: None)
    (missing / "archive" / f"{meta.isic_id[0]}.jpg").unlink()
    with pytest.raises(DataError, match=f"have no image file in .*line 2 \\({meta.isic_id[0]}\\)"):
        ingest(missing, verify="none", progress=False, image_types=None)


def test_a_run_on_the_archive_and_its_card_counts_licences(archive, tmp_path):
    run = tmp_path / "run"
    code, out = cli("train", archive, "--out", run, "--backbone", "test_efficientnet", "--no-pretrained",
                    "--image-size", 32, "--batch-size", 16, "--epochs", 1, "--folds", 0, "--k-folds", 3,
                    "--workers", 0)  # fmt: skip
    assert code == 0, out
    assert "left out" in out and "clinical: close-up" in out  # said, not silently dropped
    oof = pd.read_csv(run / "fold0" / "oof.csv")
    meta = pd.read_csv(archive / "archive" / "metadata.csv", dtype=str).set_index("isic_id")
    assert (meta.loc[oof.image_name, "image_type"] == "dermoscopic").all()
    code, out = cli("evaluate", run, "--no-tta", "--bootstrap", 50)
    assert code == 0 and "Balanced multi-class accuracy (the ISIC 2019 challenge's metric" in out, out
    assert "Confusion matrix (rows: true class; columns: predicted)" in out
    code, out = cli("subgroups", run, "--data", archive, "--bootstrap", 20)
    assert code == 0, out
    groups = pd.DataFrame(json.loads((run / "subgroups.json").read_text())["groups"])
    fitz = groups[groups.column == "fitzpatrick_skin_type"]  # as recorded: not estimated
    assert fitz.images.sum() == len(oof) and set(fitz.group) <= {"I", "II", "III", "IV", "V", "VI", "unknown"}
    assert (groups.column == "estimated skin tone (ITA)").any()
    code, out = cli("card", run, "--data", archive)
    assert code == 0, out
    card = (run / "MODEL_CARD.md").read_text()
    assert "Balanced multi-class accuracy" in card and "| true \\ predicted | AK | BCC |" in card
    assert "| ISIC Archive | " in card and "| ISIC 2020 |" not in card  # the rows' source, named
    counts = meta.loc[oof.image_name].copyright_license.value_counts()
    assert f"The {len(oof)} images of the ISIC Archive it was validated on, by licence" in card
    for licence, n in counts.items():
        assert f"| {licence} | {n} |" in card
    for (who, licence), n in (
        meta.loc[oof.image_name].groupby(["attribution", "copyright_license"]).size().items()
    ):
        assert f"| {who} | {licence} | {n} |" in card
