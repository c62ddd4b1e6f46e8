"""A synthetic ISIC Archive download, in the layout the official isic-cli writes.

OUT/archive/ holds metadata.csv (isic_id, attribution, copyright_license and the isic-metadata
fields), ISIC_<n>.jpg beside it, attribution.txt and licenses/<licence>.txt. Diagnoses are paths
of the real ISIC hierarchy (diagnosis_1 .. diagnosis_5), drawn per class in the proportions of
ISIC 2019 with melanoma at its own rate; each centre gives its images under one licence; some
lesions also have a clinical close-up; some patients carry a Fitzpatrick skin type; a few images
have no diagnosis. OUT/truth/ holds the settings and every image's generation parameters (the
pipeline never reads it). The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.formats import ATTRIBUTION_ARCHIVE, DIAGNOSIS_LEVELS, LICENSES_ARCHIVE, METADATA_ARCHIVE
from melanoma.fileio import write_csv
from melanoma.synthetic.generate import (
    check_out,
    choose,
    draw_labels,
    image_records,
    patient_sizes,
    plan_images,
    unique_ids,
    with_gaps,
    write_images,
)
from melanoma.synthetic.render import sample_patient, skin_ita

FOLDER = "archive"
# The diagnosis paths drawn for each nine-class name (every one in the isic-metadata vocabulary).
PATHS = {
    "melanoma": [
        "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma Invasive",
        "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma in situ",
        "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma Invasive:"
        "Melanoma Invasive, Superficial spreading",
    ],
    "nevus": [
        "Benign:Benign melanocytic proliferations:Nevus",
        "Benign:Benign melanocytic proliferations:Nevus:Nevus, Atypical, Dysplastic, or Clark",
        "Benign:Benign melanocytic proliferations:Nevus:Nevus, Congenital",
    ],
    "BCC": [
        "Malignant:Malignant adnexal epithelial proliferations - Follicular:Basal cell carcinoma",
        "Malignant:Malignant adnexal epithelial proliferations - Follicular:Basal cell carcinoma:"
        "Basal cell carcinoma, Nodular",
    ],
    "SCC": [
        "Malignant:Malignant epidermal proliferations:Squamous cell carcinoma in situ",
        "Malignant:Malignant epidermal proliferations:Keratoacanthoma",
    ],
    "AK": ["Indeterminate:Indeterminate epidermal proliferations:Solar or actinic keratosis"],
    "BKL": [
        "Benign:Benign epidermal proliferations:Seborrheic keratosis",
        "Benign:Benign epidermal proliferations:Solar lentigo",
        "Benign:Benign epidermal proliferations:Lichen planus like keratosis",
        "Benign:Benign epidermal proliferations:Pigmented benign keratosis",
    ],
    "DF": ["Benign:Benign soft tissue proliferations - Fibro-histiocytic:Dermatofibroma"],
    "VASC": [
        "Benign:Benign soft tissue proliferations - Vascular:Hemangioma",
        "Benign:Benign soft tissue proliferations - Vascular:Angiokeratoma",
        "Benign:Benign soft tissue proliferations - Vascular:Pyogenic granuloma",
    ],
    "unknown": [
        "Benign",
        "Indeterminate:Indeterminate melanocytic proliferations:Atypical melanocytic neoplasm",
        "Benign:Flat melanotic pigmentations - not melanocytic nevus:Cafe au lait macule or patch",
    ],
}
# ISIC 2019's counts per class, melanoma excluded (its rate is set on its own), plus lesions of no
# ISIC 2019 class.
_COUNTS = {
    "nevus": 12875,
    "BCC": 3323,
    "BKL": 2624,
    "AK": 867,
    "SCC": 628,
    "VASC": 253,
    "DF": 239,
    "unknown": 600,
}
# Contributing centres and the licence each gives its images under.
CENTRES = {
    "Synthetic Dermatology Centre A": "CC-BY",
    "Synthetic Skin Clinic B": "CC-0",
    "Synthetic University Hospital C": "CC-BY-NC",
}
_SITES = {
    "anterior torso": 0.2, "posterior torso": 0.2, "lateral torso": 0.04, "lower extremity": 0.2,
    "upper extremity": 0.1, "head/neck": 0.14, "palms/soles": 0.015, "oral/genital": 0.005,
}  # fmt: skip
_SIZES = [(192, 192), (200, 150), (224, 168), (256, 192)]
FITZPATRICK = ("I", "II", "III", "IV", "V", "VI")
FITZPATRICK_ITA = (55.0, 41.0, 28.0, 10.0, -30.0, -np.inf)  # lower bounds
COLUMNS = [
    "isic_id", "attribution", "copyright_license", "acquisition_day", "age_approx", "anatom_site_general",
    *DIAGNOSIS_LEVELS, "diagnosis_confirm_type", "fitzpatrick_skin_type", "image_type", "lesion_id",
    "patient_id", "sex",
]  # fmt: skip


@dataclass
class SynthArchiveConfig:
    """What to write: lesions (each a dermoscopic image; some also a clinical close-up)."""

    n_lesions: int = 400
    melanoma_rate: float = 0.15
    clinical_rate: float = 0.1
    undiagnosed_rate: float = 0.02
    fitzpatrick_rate: float = 0.4
    seed: int = 0


def fitzpatrick_of(skin: tuple[float, float, float]) -> str:
    """A Fitzpatrick type for a drawn skin colour, from its ITA as Del Bino and Bernerd (2013) relate
    them: I above 55 degrees, II 41-55, III 28-41, IV 10-28, V -30-10, VI below."""
    angle = skin_ita(skin)
    return next(t for bound, t in zip(FITZPATRICK_ITA, FITZPATRICK, strict=True) if angle > bound)


def _lesions(rng: np.random.Generator, cfg: SynthArchiveConfig) -> tuple[pd.DataFrame, dict]:
    n = cfg.n_lesions
    names = draw_labels(rng, _COUNTS, n, "melanoma", cfg.melanoma_rate)
    sizes = patient_sizes(rng, n)
    pids = [f"IP_{v:07d}" for v in unique_ids(rng, len(sizes), 100000, 9999999, set())]
    patient_of = np.repeat(pids, sizes)
    looks = {p: sample_patient(rng) for p in pids}
    centre = dict(zip(pids, choose(rng, dict.fromkeys(CENTRES, 1.0), len(pids)), strict=True))
    typed = {p for p in pids if rng.random() < cfg.fitzpatrick_rate}
    sex = dict(
        zip(pids, with_gaps(rng, choose(rng, {"male": 0.52, "female": 0.48}, len(pids)), 0.02), strict=True)
    )
    age = {p: float(np.clip(5 * round(rng.normal(54, 17) / 5), 0, 85)) for p in pids}
    paths = [PATHS[name][int(rng.integers(len(PATHS[name])))] for name in names]
    paths = [("" if rng.random() < cfg.undiagnosed_rate else p) for p in paths]
    table = pd.DataFrame(
        {
            "name": names,
            "path": paths,
            "patient_id": patient_of,
            "lesion_id": [f"IL_{v:07d}" for v in unique_ids(rng, n, 1000000, 9999999, set())],
            "attribution": [centre[p] for p in patient_of],
            "age_approx": with_gaps(rng, [age[p] for p in patient_of], 0.02),
            "anatom_site_general": with_gaps(rng, choose(rng, _SITES, n), 0.05),
            "sex": [sex[p] for p in patient_of],
            "fitzpatrick_skin_type": [
                fitzpatrick_of(looks[p].skin) if p in typed else None for p in patient_of
            ],
        }
    )
    return table, looks


def _images(rng: np.random.Generator, lesions: pd.DataFrame, cfg: SynthArchiveConfig) -> pd.DataFrame:
    """One dermoscopic image per lesion, and a clinical close-up of some; in a random order."""
    clinical = lesions[rng.random(len(lesions)) < cfg.clinical_rate]
    rows = pd.concat(
        [lesions.assign(image_type="dermoscopic"), clinical.assign(image_type="clinical: close-up")],
        ignore_index=True,
    )
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    rows["isic_id"] = [f"ISIC_{v:07d}" for v in unique_ids(rng, len(rows), 0, 9999999, set())]
    rows["copyright_license"] = rows.attribution.map(CENTRES)
    confirm = rows.name.isin(["melanoma", "BCC", "SCC"]).map(
        {True: "histopathology", False: "single image expert consensus"}
    )
    rows["diagnosis_confirm_type"] = confirm.where(rows.path != "", None)
    levels = rows.path.str.split(":", expand=True).reindex(columns=range(5))
    for k, column in enumerate(DIAGNOSIS_LEVELS):
        rows[column] = levels[k].where(levels[k].notna() & (levels[k] != ""), None)
    rows["acquisition_day"] = None
    return rows


def generate_archive(
    out: Path,
    cfg: SynthArchiveConfig | None = None,
    workers: int = 0,
    progress: bool = True,
    force: bool = False,
) -> dict[str, int]:
    """Write OUT/archive/ in isic-cli's layout and OUT/truth/; returns counts. A folder synth did not
    write (no OUT/truth/) is replaced only with `force`."""
    cfg = cfg or SynthArchiveConfig()
    if cfg.n_lesions < 20:
        raise ValueError(f"n_lesions is {cfg.n_lesions}: at least 20 are needed so every class occurs")
    out = Path(out)
    check_out(out, (FOLDER,), force)
    rng = np.random.default_rng(cfg.seed)
    lesions, looks = _lesions(rng, cfg)
    rows = _images(rng, lesions, cfg)
    folder = out / FOLDER
    (folder / LICENSES_ARCHIVE).mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    items = plan_images(rng, rows.isic_id, FOLDER, rows.name, [looks[p] for p in rows.patient_id], _SIZES)
    shapes = write_images(items, out, workers, progress)
    write_csv(rows[COLUMNS], folder / METADATA_ARCHIVE)
    by_count = rows.attribution.value_counts().index
    (folder / ATTRIBUTION_ARCHIVE).write_text("\n\n".join(by_count), encoding="utf-8")
    for licence in sorted(set(CENTRES.values())):
        (folder / LICENSES_ARCHIVE / f"{licence}.txt").write_text(
            f"{licence}: the licence named by the real ISIC Archive; these images are synthetic "
            "(written by melanoma synth), not of patients.\n",
            encoding="utf-8",
        )
    records = image_records(items, shapes, ["archive"] * len(rows), list(rows.patient_id), list(rows.path))
    pd.DataFrame(records).to_csv(out / "truth/images.csv", index=False, float_format="%.6g")
    (out / "truth" / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")  # marks it synthetic
    return {
        "images": len(rows),
        "lesions": len(lesions),
        "clinical": int((rows.image_type != "dermoscopic").sum()),
        "undiagnosed": int((rows.path == "").sum()),
        "patients": int(rows.patient_id.nunique()),
    }
