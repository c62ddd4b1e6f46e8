import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.checks import TABLE_COLUMNS, DataError
from melanoma.data.ingest import find_sources, ingest


def _jpeg(path, size=(40, 30), colour=(120, 80, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


def _csv(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


TRAIN_COLS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
              "diagnosis", "benign_malignant", "target"]  # fmt: skip
TEST_COLS = TRAIN_COLS[:5]


def write_2020(root):
    _csv(root / "train.csv", [
        ["ISIC_0100001", "IP_1", "male", 45.0, "torso", "melanoma", "malignant", 1],
        ["ISIC_0100002", "IP_1", "male", 45.0, "head/neck", "seborrheic keratosis", "benign", 0],
        ["ISIC_0100003", "IP_2", None, None, None, "unknown", "benign", 0],
    ], TRAIN_COLS)  # fmt: skip
    _csv(root / "test.csv", [
        ["ISIC_0200001", "IP_3", "female", 60.0, "lower extremity"],
        ["ISIC_0200002", "IP_3", "female", 60.0, "palms/soles"],
    ], TEST_COLS)  # fmt: skip
    for n in ["ISIC_0100001", "ISIC_0100002", "ISIC_0100003"]:
        _jpeg(root / "jpeg/train" / f"{n}.jpg")
    for n in ["ISIC_0200001", "ISIC_0200002"]:
        _jpeg(root / "jpeg/test" / f"{n}.jpg")


def write_2019(root):
    codes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    onehot = lambda c: [1.0 if k == c else 0.0 for k in codes]  # noqa: E731
    _csv(root / "ISIC_2019_Training_GroundTruth.csv", [
        ["ISIC_0000001", *onehot("NV")],
        ["ISIC_0000002_downsampled", *onehot("BCC")],
        ["ISIC_0000003", *onehot("MEL")],
    ], ["image", *codes])  # fmt: skip
    _csv(root / "ISIC_2019_Training_Metadata.csv", [
        ["ISIC_0000001", 35.0, "anterior torso", "HAM_1", "female"],
        ["ISIC_0000002_downsampled", None, "lateral torso", None, None],
        ["ISIC_0000003", 70.0, "upper extremity", "BCN_2", "male"],
    ], ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"])  # fmt: skip
    for n in ["ISIC_0000001", "ISIC_0000002_downsampled", "ISIC_0000003"]:
        _jpeg(root / "ISIC_2019_Training_Input" / f"{n}.jpg")


def write_resized(root, n=64):
    d20, d19 = root / f"jpeg-melanoma-{n}x{n}", root / f"jpeg-isic2019-{n}x{n}"
    _csv(d20 / "train.csv", [
        ["ISIC_0100001", "IP_1", "male", 45.0, "torso", "melanoma", "malignant", 1, 4, 6000, 4000],
        ["ISIC_0100002", "IP_2", "female", 50.0, "torso", "nevus", "benign", 0, -1, 640, 480],
    ], TRAIN_COLS + ["tfrecord", "width", "height"])  # fmt: skip
    _csv(d20 / "test.csv", [["ISIC_0200001", "IP_3", "female", 60.0, None, 2, 640, 480]],
         TEST_COLS + ["tfrecord", "width", "height"])  # fmt: skip
    _csv(d19 / "train.csv", [
        ["ISIC_0000001", -1, "male", 40.0, "posterior torso", "VASC", "benign", 0, 17, 600, 450],
        ["ISIC_0000002", None, "female", 35.0, None, "MEL", "malignant", 1, 3, 600, 450],
    ], TRAIN_COLS + ["tfrecord", "width", "height"])  # fmt: skip
    for name in ["ISIC_0100001", "ISIC_0100002"]:
        _jpeg(d20 / "train" / f"{name}.jpg", (n, n))
    _jpeg(d20 / "test" / "ISIC_0200001.jpg", (n, n))
    for name in ["ISIC_0000001", "ISIC_0000002"]:
        _jpeg(d19 / "train" / f"{name}.jpg", (n, n))


@pytest.fixture
def hand(tmp_path):
    write_2020(tmp_path / "isic2020")
    write_2019(tmp_path / "isic2019")
    return tmp_path


# --- layouts ---------------------------------------------------------------------------------


def test_original_layouts_hand_written(hand):
    t = ingest(hand, progress=False)
    assert list(t.columns) == TABLE_COLUMNS
    t = t.set_index("image_name")
    assert len(t) == 8
    assert t.loc["ISIC_0100001", ["source", "split", "is_ext", "diagnosis", "target"]].tolist() == [
        "isic2020", "train", 0, "melanoma", 6,
    ]  # fmt: skip
    assert t.loc["ISIC_0100002", ["raw_diagnosis", "diagnosis", "target"]].tolist() == [
        "seborrheic keratosis", "BKL", 2,
    ]  # fmt: skip
    assert t.loc["ISIC_0200001", "target"] == -1 and pd.isna(t.loc["ISIC_0200001", "diagnosis"])
    assert t.loc["ISIC_0000002_downsampled", ["source", "is_ext", "raw_diagnosis", "target"]].tolist() == [
        "isic2019", 1, "BCC", 1,
    ]  # fmt: skip
    assert t.loc["ISIC_0000001", "diagnosis"] == "nevus"
    assert pd.isna(t.loc["ISIC_0000001", "patient_id"])
    # 2019 sites are mapped to the 2020 vocabulary.
    assert t.loc["ISIC_0000001", "anatom_site"] == "torso"
    assert t.loc["ISIC_0000002_downsampled", "anatom_site"] == "torso"
    assert pd.isna(t.loc["ISIC_0100003", "anatom_site"]) and pd.isna(t.loc["ISIC_0100003", "sex"])
    assert t.loc["ISIC_0100001", "image_path"].endswith("isic2020/jpeg/train/ISIC_0100001.jpg")
    assert t.tfrecord.isna().all()


def test_schemes_change_class_indices(hand):
    t = ingest(hand, scheme="4c", progress=False).set_index("image_name")
    assert t.loc[["ISIC_0100001", "ISIC_0000002_downsampled", "ISIC_0000001"], "target"].tolist() == [1, 3, 2]
    t = ingest(hand, scheme="2c", progress=False).set_index("image_name")
    assert t.loc[["ISIC_0100001", "ISIC_0000001"], "target"].tolist() == [0, 1]


def test_2020_only(tmp_path):
    write_2020(tmp_path)  # the Kaggle files straight in the data folder
    t = ingest(tmp_path, progress=False)
    assert set(t.source) == {"isic2020"} and len(t) == 5


def test_resized_layouts(tmp_path):
    write_resized(tmp_path, 64)
    t = ingest(tmp_path, progress=False).set_index("image_name")  # the only size is found alone
    assert len(t) == 5
    assert t.loc["ISIC_0100001", "tfrecord"] == 4
    assert t.loc["ISIC_0100002", "tfrecord"] == -1  # kept: dropping is the fold step's decision
    assert t.loc["ISIC_0000001", ["source", "is_ext", "diagnosis", "target", "tfrecord"]].tolist() == [
        "isic2019", 1, "VASC", 5, 17,
    ]  # fmt: skip
    assert pd.isna(t.loc["ISIC_0000001", "patient_id"]) and pd.isna(t.loc["ISIC_0000002", "patient_id"])
    assert t.loc["ISIC_0000001", "anatom_site"] == "torso"
    assert t.loc["ISIC_0100001", "image_path"].endswith("jpeg-melanoma-64x64/train/ISIC_0100001.jpg")


def test_resized_size_is_chosen_when_several(tmp_path):
    write_resized(tmp_path, 64)
    write_resized(tmp_path, 32)
    with pytest.raises(DataError, match="pre-resized sizes found: 32, 64"):
        ingest(tmp_path, progress=False)
    assert find_sources(tmp_path, 32).isic2020.name == "jpeg-melanoma-32x32"
    with pytest.raises(DataError, match=r"no jpeg-melanoma-512x512 folder \(found: 32x32, 64x64\)"):
        ingest(tmp_path, data_size=512, progress=False)


def test_generator_output(tiny_data):
    t = ingest(tiny_data, progress=False)
    train = pd.read_csv(tiny_data / "isic2020/train.csv")
    test = pd.read_csv(tiny_data / "isic2020/test.csv")
    ext = pd.read_csv(tiny_data / "isic2019/ISIC_2019_Training_GroundTruth.csv")
    assert len(t) == len(train) + len(test) + len(ext)
    assert t.groupby(["source", "split"]).size().to_dict() == {
        ("isic2019", "train"): len(ext), ("isic2020", "test"): len(test), ("isic2020", "train"): len(train),
    }  # fmt: skip
    assert set(t.anatom_site.dropna()) <= {"torso", "head/neck", "upper extremity", "lower extremity",
                                           "palms/soles", "oral/genital"}  # fmt: skip
    assert t[t.is_ext == 1].patient_id.isna().all()
    mel = t.diagnosis == "melanoma"
    assert (t.target[mel] == 6).all() and (t.target[t.split == "test"] == -1).all()


# --- errors ----------------------------------------------------------------------------------


def test_no_data_found(tmp_path):
    with pytest.raises(DataError, match="no ISIC 2020 data found"):
        ingest(tmp_path, progress=False)
    with pytest.raises(DataError, match="data folder not found"):
        ingest(tmp_path / "nope", progress=False)


def test_missing_csv(hand):
    (hand / "isic2020/test.csv").unlink()
    with pytest.raises(
        DataError, match=r"isic2020/test.csv: file not found; expected the ISIC 2020 test table"
    ):
        ingest(hand, progress=False)
    (hand / "isic2019/ISIC_2019_Training_Metadata.csv").unlink()
    write_2020(hand / "isic2020")
    with pytest.raises(DataError, match="ISIC_2019_Training_Metadata.csv: file not found"):
        ingest(hand, progress=False)


def test_missing_column(hand):
    path = hand / "isic2020/train.csv"
    pd.read_csv(path).drop(columns=["diagnosis"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) diagnosis; expected"):
        ingest(hand, progress=False)


def test_unknown_diagnosis_names_rows(hand):
    path = hand / "isic2020/train.csv"
    t = pd.read_csv(path)
    t.loc[[0, 2], "diagnosis"] = ["Melanoma", "mole"]
    t.to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match=r"train.csv: 2 row\(s\) have an unknown diagnosis .*line 2 \(Melanoma\), line 4 \(mole\)",
    ):
        ingest(hand, progress=False)


def test_duplicate_image_names_in_a_csv(hand):
    path = hand / "isic2020/train.csv"
    t = pd.read_csv(path)
    t.loc[2, "image_name"] = "ISIC_0100001"
    t.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"train.csv: 1 row\(s\) repeat an earlier image_name: line 4 \(ISIC_0100001\)"
    ):
        ingest(hand, progress=False)


def test_duplicate_image_names_across_tables(hand):
    for csv in ["ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"]:
        t = pd.read_csv(hand / "isic2019" / csv)
        t.loc[0, "image"] = "ISIC_0100001"
        t.to_csv(hand / "isic2019" / csv, index=False)
    (hand / "isic2019/ISIC_2019_Training_Input/ISIC_0000001.jpg").rename(
        hand / "isic2019/ISIC_2019_Training_Input/ISIC_0100001.jpg"
    )
    with pytest.raises(
        DataError, match=r"2 rows share an image name across tables: ISIC_0100001 \(isic2020\+isic2019\)"
    ):
        ingest(hand, progress=False)


def test_rows_without_image_file(hand):
    t = pd.read_csv(hand / "isic2020/train.csv")
    for i in range(6):
        t.loc[len(t)] = [f"ISIC_09{i:05d}", "IP_9", "male", 30.0, "torso", "nevus", "benign", 0]
    t.to_csv(hand / "isic2020/train.csv", index=False)
    with pytest.raises(DataError) as err:
        ingest(hand, progress=False)
    msg = str(err.value)
    assert "train.csv: 6 row(s) have no image file in" in msg
    assert "line 5 (ISIC_0900000)" in msg and "and 1 more" in msg  # first five and a count


def test_2019_not_one_hot(hand):
    path = hand / "isic2019/ISIC_2019_Training_GroundTruth.csv"
    t = pd.read_csv(path)
    t.loc[1, "MEL"] = 1.0
    t.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"GroundTruth.csv: 1 row\(s\) are not one-hot .*line 3 \(ISIC_0000002_downsampled\)"
    ):
        ingest(hand, progress=False)


def test_2019_metadata_and_truth_disagree(hand):
    path = hand / "isic2019/ISIC_2019_Training_Metadata.csv"
    pd.read_csv(path).iloc[:2].to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"GroundTruth.csv: 1 row\(s\) have no row in ISIC_2019_Training_Metadata.csv"
    ):
        ingest(hand, progress=False)


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("sex", "M", r"have a sex other than male, female or empty: line 2"),
        ("age_approx", "forty", r"have a non-numeric age_approx: line 2"),
        ("anatom_site_general_challenge", "scalp", r"have an unknown anatom_site_general_challenge"),
        ("target", "0", r"have a target that disagrees with the diagnosis .*: line 2 \(ISIC_0100001\)"),
    ],
)
def test_bad_metadata_values(hand, column, value, message):
    path = hand / "isic2020/train.csv"
    t = pd.read_csv(path, dtype=str)
    t.loc[0, column] = value
    t.to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        ingest(hand, progress=False)


def test_resized_tfrecord_must_be_whole(tmp_path):
    write_resized(tmp_path)
    path = tmp_path / "jpeg-melanoma-64x64/train.csv"
    t = pd.read_csv(path)
    t["tfrecord"] = t.tfrecord.astype(float)
    t.loc[1, "tfrecord"] = 2.5
    t.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"have a tfrecord that is not a whole number: line 3"):
        ingest(tmp_path, progress=False)


@pytest.mark.parametrize("verify", ["decode", "header"])
def test_undecodable_images(hand, verify, tmp_path):
    bad = hand / "isic2020/jpeg/train/ISIC_0100002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated
    (hand / "isic2020/jpeg/test/ISIC_0200001.jpg").write_bytes(b"")  # zero bytes
    with pytest.raises(DataError) as err:
        ingest(hand, verify=verify, progress=False)
    assert "2 image(s) cannot be decoded" in str(err.value)
    assert "ISIC_0100002.jpg" in str(err.value) and "ISIC_0200001.jpg" in str(err.value)
    skipped = tmp_path / "report" / "skipped.csv"
    t = ingest(hand, verify=verify, skip_bad_images=True, skipped_csv=skipped, progress=False)
    assert len(t) == 6 and "ISIC_0100002" not in set(t.image_name)
    listed = pd.read_csv(skipped)
    assert sorted(listed.image_name) == ["ISIC_0100002", "ISIC_0200001"]
    assert listed.error.str.len().min() > 0


def test_png_named_jpg_is_fine(hand):
    path = hand / "isic2020/jpeg/train/ISIC_0100001.jpg"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path, format="PNG")
    assert len(ingest(hand, progress=False)) == 8
