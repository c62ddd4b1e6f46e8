import pandas as pd
import pytest

from melanoma.targets import RAW_TO_NAME, class_names, encode, map_raw, melanoma_index

# raw label -> (class index under 9c, 4c, 2c), written out by hand from docs/recipe.md.
EXPECTED = {
    "unknown": (8, 3, 1),
    "nevus": (7, 2, 1),
    "melanoma": (6, 1, 0),
    "seborrheic keratosis": (2, 0, 1),
    "lentigo NOS": (2, 0, 1),
    "lichenoid keratosis": (2, 0, 1),
    "solar lentigo": (2, 0, 1),
    "cafe-au-lait macule": (8, 3, 1),
    "atypical melanocytic proliferation": (8, 3, 1),
    "MEL": (6, 1, 0),
    "NV": (7, 2, 1),
    "BCC": (1, 3, 1),
    "AK": (0, 3, 1),
    "BKL": (2, 0, 1),
    "DF": (3, 3, 1),
    "VASC": (5, 3, 1),
    "SCC": (4, 3, 1),
    "UNK": (8, 3, 1),
}


def test_class_lists_and_melanoma_index():
    assert class_names("9c") == ["AK", "BCC", "BKL", "DF", "SCC", "VASC", "melanoma", "nevus", "unknown"]
    assert class_names("4c") == ["BKL", "melanoma", "nevus", "unknown"]
    assert class_names("2c") == ["melanoma", "unknown"]
    assert (melanoma_index("9c"), melanoma_index("4c"), melanoma_index("2c")) == (6, 1, 0)


def test_every_raw_label_is_pinned():
    assert set(EXPECTED) == set(RAW_TO_NAME)


@pytest.mark.parametrize("scheme, column", [("9c", 0), ("4c", 1), ("2c", 2)])
def test_every_raw_label_class(scheme, column):
    raw = pd.Series(list(EXPECTED))
    got = encode(map_raw(raw), scheme)
    assert got.tolist() == [EXPECTED[r][column] for r in raw]


def test_unknown_raw_label_maps_to_nan():
    assert map_raw(pd.Series(["Melanoma", "nevus"])).isna().tolist() == [True, False]


def test_unknown_scheme_is_an_error():
    with pytest.raises(ValueError, match="unknown target scheme"):
        class_names("3c")
