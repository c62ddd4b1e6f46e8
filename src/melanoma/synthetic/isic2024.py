"""A synthetic ISIC 2024 (SLICE-3D) dataset in the real layout: lesion crops from total-body photos.

OUT/isic2024/ gets train-metadata.csv (every column of the real file), train-image.hdf5 (one
dataset per isic_id holding the JPEG's bytes), test-metadata.csv (the test columns only: no
label, no diagnosis, nothing that comes after it), test-image.hdf5 and sample_submission.csv;
OUT/truth/ holds the test labels and the settings (the pipeline never reads truth/).

What it models, so that the winners' ideas have something to find:
- patients with many lesions (a long-tailed count), each at one of several centres (attribution);
  a centre shifts the photographs' colour and its share of "3D: XP" tiles;
- every patient has a baseline lesion look (colour in LAB inside and outside, size, border and
  colour irregularity, nevus confidence); their lesions vary around it;
- a malignant lesion stands out from its own patient's others (darker, larger, more irregular,
  less nevus-like), by less than patients differ from each other: the "ugly duckling" is easier to
  see within a patient than across the population;
- the crop shows the lesion as measured (size, colour, border), so an image model can learn too.
The same seed gives the same tables and the same image bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from melanoma.data.formats import COLUMNS_2024_TEST, COLUMNS_2024_TRAIN, HDF5_2024, META_2024
from melanoma.fileio import atomic_write, write_csv
from melanoma.progress import progress_bar
from melanoma.synthetic.generate import check_out

CENTRES = (
    "Memorial Sloan Kettering Cancer Center",
    "Department of Dermatology, Hospital Clínic de Barcelona",
    "University Hospital of Basel",
    "Frazer Institute, The University of Queensland, Dermatology Research Centre",
    "ACEMID MIA",
    "ViDIR Group, Department of Dermatology, Medical University of Vienna",
    "Department of Dermatology, University of Athens, Andreas Syggros Hospital of Skin and Venereal "
    "Diseases, Alexandra Hospital",
)
# body location (tbp_lv_location) -> (tbp_lv_location_simple, anatom_site_general)
LOCATIONS = {
    "Head & Neck": ("Head & Neck", "head/neck"),
    "Torso Back Top Third": ("Torso Back", "posterior torso"),
    "Torso Back Middle Third": ("Torso Back", "posterior torso"),
    "Torso Back Bottom Third": ("Torso Back", "posterior torso"),
    "Torso Front Top Half": ("Torso Front", "anterior torso"),
    "Torso Front Bottom Half": ("Torso Front", "anterior torso"),
    "Left Arm - Upper": ("Left Arm", "upper extremity"),
    "Left Arm - Lower": ("Left Arm", "upper extremity"),
    "Right Arm - Upper": ("Right Arm", "upper extremity"),
    "Right Arm - Lower": ("Right Arm", "upper extremity"),
    "Left Leg - Upper": ("Left Leg", "lower extremity"),
    "Left Leg - Lower": ("Left Leg", "lower extremity"),
    "Right Leg - Upper": ("Right Leg", "lower extremity"),
    "Right Leg - Lower": ("Right Leg", "lower extremity"),
}
MALIGNANT_DX = (
    ("Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive"),
    ("Malignant melanocytic proliferations (Melanoma)", "Melanoma in situ"),
    ("Malignant epidermal proliferations", "Basal cell carcinoma"),
    ("Malignant epidermal proliferations", "Squamous cell carcinoma in situ"),
)
BENIGN_DX = (
    "Benign melanocytic proliferations",
    "Benign epidermal proliferations",
    "Flat melanotic pigmentations",
)
FIELD_MM = 15.0  # a crop shows about 15 mm of skin


@dataclass
class Synth2024Config:
    """What to generate: lesion counts (train, test), the malignant share, centres, crop sizes."""

    n_train: int = 3000
    n_test: int = 3
    malignant_rate: float = 0.01
    centres: int = 4
    lesions_per_patient: float = 30.0
    crop_min: int = 64
    crop_max: int = 128
    seed: int = 0
    id_offset: int = 0  # added to every isic_id and patient number: another set with names of its own
    indeterminate_rate: float = 0.0  # benign rows that look half-way atypical, iddx_1 "Indeterminate"

    def __post_init__(self) -> None:
        checks = [
            (self.n_train >= 20, f"n_train must be at least 20, got {self.n_train}"),
            (self.n_test >= 1, f"n_test must be at least 1, got {self.n_test}"),
            (
                0 < self.malignant_rate < 0.5,
                f"malignant_rate must lie in (0, 0.5), got {self.malignant_rate}",
            ),
            (1 <= self.centres <= len(CENTRES), f"centres must lie in 1..{len(CENTRES)}, got {self.centres}"),
            (self.lesions_per_patient >= 1, "lesions_per_patient must be at least 1"),
            (0 <= self.indeterminate_rate < 0.5, "indeterminate_rate must lie in [0, 0.5)"),
            (16 <= self.crop_min <= self.crop_max, "crop sizes must satisfy 16 <= crop_min <= crop_max"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _patients(rng: np.random.Generator, n: int, mean: float, centres: int, first: int) -> pd.DataFrame:
    """Patients with their lesion counts (long-tailed, mean about `mean`) until n lesions are had."""
    counts: list[int] = []
    while sum(counts) < n:
        counts.append(max(1, int(rng.lognormal(np.log(mean) - 0.5, 1.0))))
    counts[-1] -= sum(counts) - n
    if counts[-1] < 1:
        counts.pop()
        counts[-1] += n - sum(counts)
    k = len(counts)
    return pd.DataFrame(
        {
            "patient_id": [f"IP_{first + i:07d}" for i in range(k)],
            "n": counts,
            "centre": rng.integers(0, centres, k),
            "age": np.clip(5 * np.round(rng.normal(58, 14, k) / 5), 5, 85),
            "sex": rng.choice(["male", "female", None], k, p=[0.52, 0.45, 0.03]),
            # the patient's own look: skin colour and their typical lesion
            "Lext": rng.normal(64, 7, k), "Aext": rng.normal(15, 3, k), "Bext": rng.normal(24, 4, k),
            "dL": rng.normal(-12, 4, k), "dA": rng.normal(4, 2, k), "dB": rng.normal(3, 2, k),
            "area": rng.lognormal(np.log(7), 0.5, k), "border": rng.normal(5, 1.5, k),
            "color": rng.normal(3, 1.5, k), "nevi": rng.normal(70, 18, k), "ecc": rng.uniform(0.4, 0.8, k),
        }
    )  # fmt: skip


def _lesions(
    rng: np.random.Generator, patients: pd.DataFrame, rate: float, prefix: int, unsure: float = 0.0
) -> pd.DataFrame:
    """One row per lesion with every shared metadata column, values around the patient's baseline;
    a share `unsure` of the benign ones (drawn apart, so the rest stay as they were) stands out
    half as far as a malignant one would (column _indeterminate)."""
    p = patients.loc[patients.index.repeat(patients.n)].reset_index(drop=True)
    n = len(p)
    malignant = np.zeros(n, dtype=bool)
    if rate > 0:
        k = max(1, round(rate * n))
        malignant[rng.choice(n, k, replace=False)] = True
    ambiguous = ~malignant & (np.random.default_rng([prefix, n]).random(n) < unsure)
    m = (malignant + 0.5 * ambiguous) * rng.uniform(0.2, 1.4, n)  # how far a lesion stands out varies
    shift = [-0.9, 0.15, 0.5, -0.25, 0.15]  # per-centre colour shift of the photographs
    centre_l = np.asarray(shift)[p.centre % len(shift)] * 3
    lext = p.Lext + rng.normal(0, 1.5, n) + centre_l
    aext, bext = p.Aext + rng.normal(0, 1, n), p.Bext + rng.normal(0, 1.2, n)
    d_l = p.dL + rng.normal(0, 3, n) - 4 * m
    d_a, d_b = p.dA + rng.normal(0, 1, n) + 1.0 * m, p.dB + rng.normal(0, 1, n) - 0.6 * m
    lum, a, b = lext + d_l, aext + d_a, bext + d_b
    area = p.area * rng.lognormal(0, 0.35, n) * (1 + 0.6 * m)
    ecc = np.clip(p.ecc + rng.normal(0, 0.08, n) + 0.05 * m, 0.05, 0.97)
    long_diam = np.sqrt(4 * area / (np.pi * np.sqrt(1 - ecc**2)))
    minor = long_diam * np.sqrt(1 - ecc**2)
    border = np.clip(p.border + rng.normal(0, 1.0, n) + 1.0 * m, 0, 10)
    color = np.clip(p.color + rng.normal(0, 1.0, n) + 1.0 * m, 0, 10)
    perimeter = np.pi * (long_diam + minor) / 2 * (1 + 0.04 * border)
    nevi = np.clip(p.nevi + rng.normal(0, 12, n) - 12 * m, 0, 100)
    locations = rng.choice(list(LOCATIONS), n)
    std_l = np.abs(rng.normal(1.5, 0.4, n) + 0.5 * color / 3)
    table = pd.DataFrame(
        {
            "isic_id": [f"ISIC_{prefix + i:07d}" for i in range(n)],
            "target": malignant.astype(int),
            "patient_id": p.patient_id,
            "age_approx": p.age,
            "sex": p.sex,
            "anatom_site_general": [LOCATIONS[loc][1] for loc in locations],
            "clin_size_long_diam_mm": long_diam.round(2),
            "image_type": "TBP tile: close-up",
            "tbp_tile_type": np.where(rng.random(n) < 0.3 + 0.1 * (p.centre % 3), "3D: XP", "3D: white"),
            "tbp_lv_A": a, "tbp_lv_Aext": aext, "tbp_lv_B": b, "tbp_lv_Bext": bext,
            "tbp_lv_C": np.hypot(a, b), "tbp_lv_Cext": np.hypot(aext, bext),
            "tbp_lv_H": np.degrees(np.arctan2(b, a)), "tbp_lv_Hext": np.degrees(np.arctan2(bext, aext)),
            "tbp_lv_L": lum, "tbp_lv_Lext": lext,
            "tbp_lv_areaMM2": area, "tbp_lv_area_perim_ratio": perimeter**2 / area,
            "tbp_lv_color_std_mean": np.abs(color * 0.4 + rng.normal(0, 0.3, n)),
            "tbp_lv_deltaA": d_a, "tbp_lv_deltaB": d_b, "tbp_lv_deltaL": d_l,
            "tbp_lv_deltaLB": np.hypot(d_l, d_b),
            "tbp_lv_deltaLBnorm": np.hypot(d_l, d_b) / np.maximum(std_l, 0.1) * 0.6,
            "tbp_lv_eccentricity": ecc,
            "tbp_lv_location": locations,
            "tbp_lv_location_simple": [LOCATIONS[loc][0] for loc in locations],
            "tbp_lv_minorAxisMM": minor, "tbp_lv_nevi_confidence": nevi,
            "tbp_lv_norm_border": border, "tbp_lv_norm_color": color, "tbp_lv_perimeterMM": perimeter,
            "tbp_lv_radial_color_std_max": np.abs(color * 0.5 + rng.normal(0, 0.5, n)),
            "tbp_lv_stdL": std_l, "tbp_lv_stdLExt": np.abs(rng.normal(1.0, 0.3, n)),
            "tbp_lv_symm_2axis": np.clip(0.25 + 0.04 * border + rng.normal(0, 0.08, n), 0, 1),
            "tbp_lv_symm_2axis_angle": rng.integers(0, 180, n),
            "tbp_lv_x": rng.normal(0, 150, n), "tbp_lv_y": rng.uniform(0, 1600, n),
            "tbp_lv_z": rng.normal(0, 60, n),
            "attribution": [CENTRES[c] for c in p.centre],
            "copyright_license": "CC-BY",
            "_indeterminate": ambiguous,
        }
    )  # fmt: skip
    for column in table.columns:
        if table[column].dtype == float and column.startswith("tbp_lv_"):
            table[column] = table[column].round(4)
    return table


def _train_only(rng: np.random.Generator, table: pd.DataFrame) -> pd.DataFrame:
    """The label and the diagnosis columns (in train only): what a model must never read."""
    n, mal = len(table), table.target.to_numpy() == 1
    dx = [MALIGNANT_DX[i] for i in rng.integers(0, len(MALIGNANT_DX), n)]
    benign = [BENIGN_DX[i] for i in rng.integers(0, len(BENIGN_DX), n)]
    out = table.copy()
    out["iddx_1"] = np.where(mal, "Malignant", np.where(table._indeterminate, "Indeterminate", "Benign"))
    out["iddx_2"] = np.where(mal, [d[0] for d in dx], np.where(rng.random(n) < 0.1, benign, None))
    out["iddx_3"] = np.where(mal, [d[1] for d in dx], None)
    out["iddx_4"] = out["iddx_5"] = None
    out["iddx_full"] = [
        "::".join(str(v) for v in parts if v is not None)
        for parts in zip(out.iddx_1, out.iddx_2, out.iddx_3, strict=True)
    ]
    melanoma = mal & pd.Series(out.iddx_3).fillna("").str.startswith("Melanoma").to_numpy()
    out["lesion_id"] = np.where(
        mal | (rng.random(n) < 0.05), [f"IL_{i:07d}" for i in rng.integers(0, 10**7, n)], None
    )
    out["mel_mitotic_index"] = np.where(melanoma, rng.choice(["<1/mm^2", "1/mm^2", "2/mm^2"], n), None)
    out["mel_thick_mm"] = np.where(melanoma, rng.uniform(0.1, 2.0, n).round(2), np.nan)
    out["tbp_lv_dnn_lesion_confidence"] = np.clip(rng.normal(95, 6, n) - 25 * mal, 0, 100).round(3)
    return out


def lab_to_rgb(lum: float, a: float, b: float) -> np.ndarray:
    """One CIE LAB colour (L 0-100, a/b about -128..127) as 8-bit RGB."""
    lab = np.array([[[lum * 255 / 100, a + 128, b + 128]]], dtype=np.float32).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)[0, 0].astype(np.float32)


def draw_crop(row: pd.Series, seed: int, size: int) -> np.ndarray:
    """The crop of one lesion: skin of the outside colour, the lesion of the inside colour at its
    measured size and shape, border irregularity as a wobbling outline, colour irregularity as
    blotches, and photographic noise."""
    rng = np.random.default_rng(seed)
    skin = lab_to_rgb(row.tbp_lv_Lext, row.tbp_lv_Aext, row.tbp_lv_Bext)
    lesion = lab_to_rgb(row.tbp_lv_L, row.tbp_lv_A, row.tbp_lv_B)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    px = size / FIELD_MM
    major = max(2.0, row.clin_size_long_diam_mm * px / 2)
    minor = max(1.5, row.tbp_lv_minorAxisMM * px / 2)
    angle = np.radians(row.tbp_lv_symm_2axis_angle)
    cx, cy = size / 2 + rng.normal(0, size / 30), size / 2 + rng.normal(0, size / 30)
    dx, dy = xx - cx, yy - cy
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    wobble = 1 + 0.03 * row.tbp_lv_norm_border * sum(
        rng.uniform(0.2, 1) * np.sin(f * theta + rng.uniform(0, 6.3)) for f in (3, 5, 7)
    )
    r = np.sqrt((u / major) ** 2 + (v / minor) ** 2) / wobble
    inside = np.clip((1.15 - r) / 0.3, 0, 1)[..., None]
    blotch = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), size / 14)
    blotch = blotch / (blotch.std() + 1e-6) * row.tbp_lv_norm_color * 4
    image = skin * (1 - inside) + (lesion + blotch[..., None]) * inside
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _write_hdf5(path: Path, table: pd.DataFrame, cfg: Synth2024Config, what: str, progress: bool) -> None:
    import h5py

    sizes = np.random.default_rng([cfg.seed, len(table), 7]).integers(
        cfg.crop_min, cfg.crop_max + 1, len(table)
    )

    def write(tmp: Path) -> None:
        with (
            h5py.File(tmp, "w") as f,
            progress_bar(f"synth: drawing {what} crops", len(table), progress) as advance,
        ):
            for i, row in enumerate(table.itertuples(index=False)):
                crop = draw_crop(
                    row, seed=cfg.seed * 1_000_003 + i + (0 if what == "train" else 10**8), size=int(sizes[i])
                )
                f.create_dataset(row.isic_id, data=np.bytes_(_jpeg(crop)))  # as the download: JPEG bytes
                advance()

    atomic_write(path, write)


def generate_2024(
    out: Path, cfg: Synth2024Config | None = None, progress: bool = True, force: bool = False
) -> dict:
    """Write OUT/isic2024/ (and OUT/truth/isic2024_test.csv); returns counts. A folder synth did
    not write (no OUT/truth/) is replaced only with `force`."""
    cfg = cfg or Synth2024Config()
    out = Path(out)
    folder = out / "isic2024"
    check_out(out, (folder.name,), force)
    rng = np.random.default_rng(cfg.seed)
    at = cfg.id_offset
    train_patients = _patients(rng, cfg.n_train, cfg.lesions_per_patient, cfg.centres, 1 + at)
    test_patients = _patients(rng, cfg.n_test, cfg.lesions_per_patient, cfg.centres, 9_000_000 + at)
    unsure = cfg.indeterminate_rate
    train = _train_only(rng, _lesions(rng, train_patients, cfg.malignant_rate, 1_000_000 + at, unsure))
    test = _lesions(
        rng, test_patients, cfg.malignant_rate if cfg.n_test >= 100 else 0.0, 9_000_000 + at, unsure
    )
    folder.mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    write_csv(train[COLUMNS_2024_TRAIN], folder / META_2024["train"])
    write_csv(test[COLUMNS_2024_TEST], folder / META_2024["test"])
    write_csv(test[["isic_id"]].assign(target=0.3), folder / "sample_submission.csv")
    write_csv(test[["isic_id", "target"]], out / "truth" / "isic2024_test.csv")
    (out / "truth" / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")  # marks it synthetic
    _write_hdf5(folder / HDF5_2024["train"], train, cfg, "train", progress)
    _write_hdf5(folder / HDF5_2024["test"], test, cfg, "test", progress)
    return {
        "train": len(train),
        "malignant": int(train.target.sum()),
        "patients": int(train.patient_id.nunique()),
        "centres": int(train.attribution.nunique()),
        "test": len(test),
    }
