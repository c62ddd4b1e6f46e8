import math

import pandas as pd
import pytest

from melanoma.metadata import meta_features


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
