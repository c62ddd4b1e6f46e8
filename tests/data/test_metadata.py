import math

import pandas as pd
import pytest

from melanoma.data.metadata import meta_features


def test_meta_features_on_hand_written_table(tmp_path):
    sizes = [100, 1000, 50, 7, 3000]
    paths = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(b"x" * n)
        paths.append(str(p))
    table = pd.DataFrame(
        {
            "image_path": paths,
            "image_name": [f"I{i}" for i in range(5)],
            "patient_id": ["P1", "P1", "P2", pd.NA, "P1"],
            "split": ["train", "train", "train", "train", "test"],
            "sex": ["male", "female", None, "male", "female"],
            "age_approx": [45.0, None, 90.0, 30.0, 0.0],
            "anatom_site": ["torso", "head/neck", None, "torso", "oral/genital"],
        }
    )
    m = meta_features(table)
    assert list(m.columns) == [
        "sex", "age_approx", "n_images", "image_size",
        "site_head/neck", "site_oral/genital", "site_torso", "site_nan",
    ]  # fmt: skip
    assert m.sex.tolist() == [1.0, 0.0, -1.0, 1.0, 0.0]
    assert m.age_approx.tolist() == pytest.approx([0.5, 0.0, 1.0, 30 / 90, 0.0])
    # P1 has two train images; its test image counts within the test split; no patient -> 1.
    assert m.n_images.tolist() == pytest.approx(
        [math.log(3), math.log(3), math.log(2), math.log(2), math.log(2)]
    )
    assert m.image_size.tolist() == pytest.approx([math.log(n) for n in sizes])
    assert m["site_torso"].tolist() == [1, 0, 0, 1, 0]
    assert m["site_head/neck"].tolist() == [0, 1, 0, 0, 0]
    assert m["site_oral/genital"].tolist() == [0, 0, 0, 0, 1]
    assert m["site_nan"].tolist() == [0, 0, 1, 0, 0]


def _table(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(b"x" * (10 + i))
        paths.append(str(p))
    return pd.DataFrame(
        {
            "image_path": paths,
            "image_name": [f"I{i}" for i in range(4)],
            "patient_id": ["P1", "P1", "P1", "P1"],
            "split": ["train", "train", "train", "test"],
            "sex": ["male"] * 4,
            "age_approx": [45.0] * 4,
            "anatom_site": ["torso"] * 4,
            "fold": [0, -1, 1, -1],  # I1: a near-duplicate dropped from training; I3: test
        }
    )


def test_n_images_counts_after_dropped_duplicates(tmp_path):
    from melanoma.data.metadata import dropped_rows

    table = _table(tmp_path)
    assert dropped_rows(table).tolist() == [False, True, False, False]  # test rows are not "dropped"
    m = meta_features(table, dropped_rows(table))
    # P1 keeps two train images (as the winners counted after dropping tfrecord -1); one test image.
    assert m.n_images.tolist()[::2] == pytest.approx([math.log(3), math.log(3)])
    assert m.n_images[3] == pytest.approx(math.log(2))
    assert meta_features(table).n_images[0] == pytest.approx(math.log(4))  # without: all three counted


def test_prediction_counts_as_training_did(tmp_path):
    import json

    from melanoma.evaluation.predict import meta_matrix

    table = _table(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    columns = list(meta_features(table).columns)
    (run / "config.json").write_text(json.dumps({"use_meta": True, "meta_columns": columns}))
    table[["image_name", "fold"]].iloc[:3].to_csv(run / "folds.csv", index=False)
    m = meta_matrix(table.drop(columns="fold"), run)  # the table predict reads has no folds
    assert m[0, columns.index("n_images")] == pytest.approx(math.log(3))
