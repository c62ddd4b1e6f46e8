import numpy as np
import pandas as pd
import pytest

from melanoma.predict import SubmissionError, validate_submission, write_submission

NAMES = pd.Series(["ISIC_1", "ISIC_2", "ISIC_3"])


def test_valid_submission_is_written(tmp_path):
    sub = pd.DataFrame({"image_name": ["ISIC_3", "ISIC_1", "ISIC_2"], "target": [0.0, 1.0, 0.5]})
    path = write_submission(sub, NAMES, tmp_path / "sub.csv")
    assert path.read_text().splitlines() == ["image_name,target", "ISIC_3,0.0", "ISIC_1,1.0", "ISIC_2,0.5"]


@pytest.mark.parametrize(
    "names, target, message",
    [
        (["ISIC_1", "ISIC_1", "ISIC_2", "ISIC_3"], [0.1] * 4, r"1 repeated image\(s\), e.g. ISIC_1"),
        (["ISIC_1", "ISIC_2"], [0.1, 0.2], r"1 test image\(s\) missing, e.g. ISIC_3"),
        (
            ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_9"],
            [0.1] * 4,
            r"1 image\(s\) not in the test set, e.g. ISIC_9",
        ),
        (["ISIC_1", "ISIC_2", "ISIC_3"], [0.1, np.nan, 0.2], r"1 NaN or non-numeric target"),
        (["ISIC_1", "ISIC_2", "ISIC_3"], [0.1, 1.2, -0.1], r"2 target\(s\) outside \[0, 1\]"),
    ],
)
def test_invalid_submissions_are_refused_and_not_written(tmp_path, names, target, message):
    sub = pd.DataFrame({"image_name": names, "target": target})
    with pytest.raises(SubmissionError, match=message):
        write_submission(sub, NAMES, tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


def test_columns_must_be_exact():
    with pytest.raises(SubmissionError, match="columns must be image_name,target"):
        validate_submission(pd.DataFrame({"image": NAMES, "target": 0.1}), NAMES)
