"""Diagnosis vocabularies and the 9c / 4c / 2c target schemes of the winning solution.

Raw labels come in two vocabularies: the 2020 diagnosis strings and the 2019 ground-truth codes.
Both are first mapped to one set of nine names; a scheme then merges names and sorts them, and the
class index is the position in that sorted list (as the winners did).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import numpy as np
import pandas as pd

Scheme = Literal["9c", "4c", "2c", "mb"]
SCHEMES: tuple[Scheme, ...] = ("9c", "4c", "2c", "mb")
# ISIC 2024 is labelled malignant (1) or benign (0), whatever the diagnosis: scheme "mb". Its
# positive class plays the melanoma class's part everywhere (the score, AUC, pAUC).
MALIGNANT_NAMES = {"melanoma", "BCC", "SCC", "malignant"}
NAMES_2024 = {0: "benign", 1: "malignant"}

# ISIC 2020 train.csv `diagnosis` strings.
DIAGNOSES_2020: dict[str, str] = {
    "unknown": "unknown",
    "nevus": "nevus",
    "melanoma": "melanoma",
    "seborrheic keratosis": "BKL",
    "lentigo NOS": "BKL",
    "lichenoid keratosis": "BKL",
    "solar lentigo": "BKL",
    "cafe-au-lait macule": "unknown",
    "atypical melanocytic proliferation": "unknown",
}

# ISIC 2019 ground-truth columns (one-hot) and the codes in the pre-resized 2019 CSV.
# UNK is never set in the public 2019 training data; it is mapped to "unknown" should it appear.
CODES_2019: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "BCC",
    "AK": "AK",
    "BKL": "BKL",
    "DF": "DF",
    "VASC": "VASC",
    "SCC": "SCC",
    "UNK": "unknown",
}

RAW_TO_NAME: dict[str, str] = {**DIAGNOSES_2020, **CODES_2019}

# The ISIC Archive's diagnoses are paths down its hierarchy, "diagnosis_1:...:diagnosis_5" (the
# isic-metadata vocabulary). The longest prefix listed here decides the nine-class name, as the
# ISIC 2019 classes were drawn; every other diagnosis of the vocabulary is "unknown", as the 2020
# labels put a cafe-au-lait macule or an atypical melanocytic proliferation there (and so a
# collision with a malignant part, a Merkel cell carcinoma or a lentigo simplex).
ARCHIVE_PREFIXES: dict[str, str] = {
    "Malignant:Malignant melanocytic proliferations (Melanoma)": "melanoma",
    "Benign:Benign melanocytic proliferations:Nevus": "nevus",
    "Malignant:Malignant adnexal epithelial proliferations - Follicular:Basal cell carcinoma": "BCC",
    "Malignant:Malignant epidermal proliferations": "SCC",  # in situ, invasive, keratoacanthoma, verrucous
    "Indeterminate:Indeterminate epidermal proliferations": "AK",  # actinic keratosis and cheilitis
    "Benign:Benign epidermal proliferations:Seborrheic keratosis": "BKL",
    "Benign:Benign epidermal proliferations:Solar lentigo": "BKL",
    "Benign:Benign epidermal proliferations:Lichen planus like keratosis": "BKL",
    "Benign:Benign epidermal proliferations:Pigmented benign keratosis": "BKL",
    "Benign:Benign epidermal proliferations:Melanoacanthoma": "BKL",
    "Benign:Flat melanotic pigmentations - not melanocytic nevus:Lentigo NOS": "BKL",
    "Benign:Flat melanotic pigmentations - not melanocytic nevus:Ink-spot lentigo": "BKL",
    "Benign:Benign soft tissue proliferations - Fibro-histiocytic:Dermatofibroma": "DF",
    "Benign:Benign soft tissue proliferations - Vascular": "VASC",
    "Benign:Hemorrhagic lesions": "VASC",
}


def archive_name(path: str, scheme: Scheme = "9c") -> str:
    """The nine-class name of an ISIC Archive diagnosis path ("Malignant:...:Melanoma Invasive");
    under scheme mb, malignant or benign from its first level (Indeterminate is benign, as in ISIC 2024)."""
    levels = path.split(":")
    if scheme == "mb":
        return "malignant" if levels[0] == "Malignant" else "benign"
    for k in range(len(levels), 0, -1):
        name = ARCHIVE_PREFIXES.get(":".join(levels[:k]))
        if name is not None:
            return name
    return "unknown"


_MERGE_4C = {"DF": "unknown", "AK": "unknown", "SCC": "unknown", "VASC": "unknown", "BCC": "unknown"}


def scheme_name(name: str, scheme: Scheme) -> str:
    """The class a 9-class name falls into under `scheme`."""
    if scheme == "9c":
        return name
    if scheme == "4c":
        return _MERGE_4C.get(name, name)
    if scheme == "2c":
        return "melanoma" if name == "melanoma" else "unknown"
    if scheme == "mb":
        return "malignant" if name in MALIGNANT_NAMES else "benign"
    raise ValueError(f"unknown target scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def class_names(scheme: Scheme) -> list[str]:
    """Sorted class names of a scheme; a class index is a position in this list."""
    return sorted({scheme_name(n, scheme) for n in set(RAW_TO_NAME.values())})


def melanoma_index(scheme: Scheme) -> int:
    """Index of the melanoma class (scheme mb: the malignant class): its probability is the
    competition score."""
    names = class_names(scheme)
    return names.index("malignant" if scheme == "mb" else "melanoma")


# ISIC 2024's first diagnosis level: the auxiliary target of an image model (--aux-weight), a
# train-only column used as a target, never as an input.
IDDX_1 = ("Benign", "Indeterminate", "Malignant")
IGNORE = -100  # a row without a first level: no auxiliary loss (torch's ignore_index)


def iddx_1_index(raw: pd.Series) -> np.ndarray:
    """Each row's position in IDDX_1 (case-insensitive), IGNORE where it has none."""
    index = {name.lower(): i for i, name in enumerate(IDDX_1)}
    return raw.astype("string").str.lower().map(index).fillna(IGNORE).to_numpy(dtype=np.int64)


def map_raw(raw: pd.Series) -> pd.Series:
    """Map raw 2020 strings / 2019 codes to the nine names; unknown labels become NaN."""
    return raw.map(RAW_TO_NAME)


def encode(names: pd.Series, scheme: Scheme) -> pd.Series:
    """Class indices under `scheme` for a series of nine-class names."""
    index = {n: i for i, n in enumerate(class_names(scheme))}
    return names.map(lambda n: index[scheme_name(n, scheme)]).astype("int64")


def positive_words(scheme: str) -> tuple[str, str]:
    """What a run's score is the probability of, for people, and its plural: malignant lesions on
    ISIC 2024 (scheme mb), melanomas otherwise."""
    return ("malignant", "malignant lesions") if scheme == "mb" else ("melanoma", "melanomas")


SOURCE_NAMES = {
    "isic2020": "ISIC 2020",
    "isic2019": "ISIC 2019",
    "isic2024": "ISIC 2024",
    "archive": "ISIC Archive",
}


def source_names(is_ext: pd.Series, scheme: str, sources: Collection[str] = ()) -> pd.Series:
    """Where out-of-fold rows come from, for people: the ISIC Archive (a run's `sources` say so),
    ISIC 2024 (scheme mb), else ISIC 2019 / 2020."""
    if "archive" in sources:  # read alone: an archive download shares a data folder with nothing
        return pd.Series(SOURCE_NAMES["archive"], index=is_ext.index)
    if scheme == "mb":
        return pd.Series("ISIC 2024", index=is_ext.index)
    return is_ext.map({0: "ISIC 2020", 1: "ISIC 2019"})
