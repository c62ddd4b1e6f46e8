"""A synthetic ISIC-like dataset written in the real public layouts.

No real ISIC images ship with the project, so the demo and the tests run on this generator. It
writes ISIC 2020 (Kaggle layout) and ISIC 2019 (challenge layout) with the real file names and
column names, plus OUT/truth/ with what the pipeline must never read: planted near-duplicates,
every image's generation parameters and the test labels. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from melanoma.data.formats import (
    COLUMNS_2019_META,
    COLUMNS_2019_TRUTH,
    COLUMNS_2020_TEST,
    COLUMNS_2020_TRAIN,
    IMAGES_2019,
    META_2019,
    TRUTH_2019,
)
from melanoma.fileio import atomic_write
from melanoma.progress import map_chunks
from melanoma.synthetic.render import (
    Device,
    LesionParams,
    PatientLook,
    lesion_geometry,
    params_record,
    render,
    sample_lesion,
    sample_patient,
    through_device,
)
from melanoma.targets import CODES_2019, RAW_TO_NAME

# Real ISIC 2020 train counts per diagnosis string (docs/data-formats.md), melanoma excluded: the
# melanoma rate is set on its own.
_COUNTS_2020 = {
    "unknown": 27124,
    "nevus": 5193,
    "seborrheic keratosis": 135,
    "lentigo NOS": 44,
    "lichenoid keratosis": 37,
    "solar lentigo": 7,
    "cafe-au-lait macule": 1,
    "atypical melanocytic proliferation": 1,
}
# Real ISIC 2019 counts per code, MEL excluded. UNK is never set in the real data (its column is all
# zero), and not here either: a UNK row made the winners' own train.py build a tenth class.
_COUNTS_2019 = {"NV": 12875, "BCC": 3323, "BKL": 2624, "AK": 867, "SCC": 628, "VASC": 253, "DF": 239}
_SITES_2020 = {
    "torso": 0.51,
    "lower extremity": 0.26,
    "upper extremity": 0.15,
    "head/neck": 0.056,
    "palms/soles": 0.011,
    "oral/genital": 0.004,
}
_SITES_2019 = {
    "anterior torso": 0.2,
    "posterior torso": 0.2,
    "lateral torso": 0.04,
    "lower extremity": 0.2,
    "upper extremity": 0.1,
    "head/neck": 0.14,
    "palms/soles": 0.015,
    "oral/genital": 0.005,
}
_TO_2019_SITE = {"torso": "anterior torso"}
_2020_TO_CODE = {
    "nevus": "NV",
    "melanoma": "MEL",
    "seborrheic keratosis": "BKL",
    "lentigo NOS": "BKL",
    "lichenoid keratosis": "BKL",
    "solar lentigo": "BKL",
}
_SIZES = {
    "small": {
        "isic2020": [(240, 160), (256, 144), (200, 150), (192, 192), (288, 192)],
        "isic2019": [(192, 192), (200, 150), (224, 168), (224, 149)],
    },
    "real": {
        "isic2020": [(6000, 4000), (1872, 1053), (640, 480), (4288, 2848), (3264, 2448), (1920, 1080)],
        "isic2019": [(1024, 1024), (600, 450), (1024, 768), (1024, 680)],
    },
}
MIN_IMAGES = 20  # per table: room for every diagnosis string or code at least once
TRANSFORMS = ("reencode", "hflip", "vflip", "rot90", "rot180", "rescale", "crop", "hflip+rescale")


@dataclass
class SynthConfig:
    """What to generate. Counts are before the planted duplicates are added."""

    n_train_2020: int = 1600
    n_test_2020: int = 400
    n_2019: int = 800
    melanoma_rate_2020: float = 0.018
    melanoma_rate_2019: float = 0.18
    duplicate_rate: float = 0.02
    sizes: Literal["small", "real"] = "small"
    seed: int = 0


@dataclass
class PlannedImage:
    """One image to draw: a lesion, or a transformed copy of another image's pixels."""

    path: str
    seed: int
    look: PatientLook
    params: LesionParams
    width: int
    height: int
    copy_of: PlannedImage | None = None
    transform: str = ""
    quality: int = 95
    device: Device | None = None  # another clinic's camera (synthetic/centre.py)


def _allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split n over labels in proportion to real counts, each label at least once."""
    total = sum(counts.values())
    out = {k: max(1, int(n * v / total)) for k, v in counts.items()}
    biggest = max(counts, key=counts.__getitem__)
    out[biggest] += n - sum(out.values())
    return out


def draw_labels(rng: np.random.Generator, counts: dict[str, int], n: int, mel: str, rate: float) -> list[str]:
    """n labels in random order: `mel` at `rate` (at least one), the rest in proportion to `counts`."""
    n_mel = max(1, round(n * rate))
    labels = [mel] * n_mel
    for k, v in _allocate(counts, n - n_mel).items():
        labels += [k] * v
    rng.shuffle(labels)
    return labels


def with_gaps(rng: np.random.Generator, values: list, rate: float) -> list:
    """Blank out about `rate` of values, at least one, as in the real tables."""
    out = list(values)
    n = max(1, round(len(out) * rate))
    for i in rng.choice(len(out), size=min(n, len(out)), replace=False):
        out[i] = None
    return out


def choose(rng: np.random.Generator, weights: dict[str, float], n: int) -> list[str]:
    """n draws of the keys of `weights`, in proportion to their values."""
    p = np.array(list(weights.values()))
    return [str(v) for v in rng.choice(list(weights), n, p=p / p.sum())]


def patient_sizes(rng: np.random.Generator, n_images: int) -> list[int]:
    """Images per patient (log-normal, 1 to 80, as in ISIC 2020), summing to n_images."""
    sizes: list[int] = []
    while sum(sizes) < n_images:
        sizes.append(int(np.clip(np.ceil(rng.lognormal(1.9, 0.8)), 1, 80)))
    sizes[-1] -= sum(sizes) - n_images
    return [s for s in sizes if s > 0]


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int, taken: set[int]) -> list[int]:
    """n numbers in [low, high) that are not in `taken` (which gains them)."""
    ids: list[int] = []
    while len(ids) < n:
        for v in rng.integers(low, high, size=2 * (n - len(ids))):
            v = int(v)
            if v not in taken and len(ids) < n:
                taken.add(v)
                ids.append(v)
    return ids


def isic2020_table(
    rng: np.random.Generator, n: int, rate: float, taken_images: set[int], taken_patients: set[int],
    sites: dict[str, float] | None = None, tone_skew: float | None = None,
) -> tuple[pd.DataFrame, dict[str, PatientLook]]:  # fmt: skip
    """n ISIC 2020 train.csv rows (melanoma at `rate`; patients with several lesions; sex, age and
    `sites` with gaps) and each patient's look (skin tones per render.sample_patient's `tone_skew`)."""
    labels = draw_labels(rng, _COUNTS_2020, n, "melanoma", rate)
    sizes = patient_sizes(rng, n)
    pids = [f"IP_{v:07d}" for v in unique_ids(rng, len(sizes), 100000, 9999999, taken_patients)]
    patient_of = np.repeat(pids, sizes)
    looks = {pid: sample_patient(rng, tone_skew) for pid in pids}
    has_mel = {p for p, lab in zip(patient_of, labels, strict=True) if lab == "melanoma"}
    sexes = with_gaps(rng, choose(rng, {"male": 0.52, "female": 0.48}, len(pids)), 0.002)
    sex = dict(zip(pids, sexes, strict=True))
    age = {
        p: float(np.clip(5 * round((rng.normal(47, 14) + (7 if p in has_mel else 0)) / 5), 0, 90))
        for p in pids
    }
    sites = choose(rng, _SITES_2020 if sites is None else sites, n)
    images = unique_ids(rng, n, 15000, 9999999, taken_images)
    table = pd.DataFrame(
        {
            "image_name": [f"ISIC_{v:07d}" for v in images],
            "patient_id": patient_of,
            "sex": [sex[p] for p in patient_of],
            # Follow-up visits: some images of a patient are 5 years older.
            "age_approx": with_gaps(
                rng, [age[p] + (5 if rng.random() < 0.1 else 0) for p in patient_of], 0.002
            ),
            "anatom_site_general_challenge": with_gaps(rng, sites, 0.016),
            "diagnosis": labels,
        }
    )
    table["benign_malignant"] = np.where(table.diagnosis == "melanoma", "malignant", "benign")
    table["target"] = (table.diagnosis == "melanoma").astype(int)
    return table, looks


def _isic2019_table(rng: np.random.Generator, n: int, rate: float) -> pd.DataFrame:
    codes = draw_labels(
        rng, _COUNTS_2019, n, "MEL", rate
    )  # UNK never: its column is all zero, as in the real data
    names = [
        f"ISIC_{i:07d}" + ("_downsampled" if rng.random() < 0.05 else "")
        for i in sorted(rng.choice(80000, n, replace=False))
    ]
    lesions = [
        f"{'HAM' if rng.random() < 0.6 else 'BCN'}_{int(v):07d}"
        for v in rng.choice(1000000, n, replace=False)
    ]
    sites = choose(rng, _SITES_2019, n)
    ages = [float(np.clip(5 * round(rng.normal(54, 17) / 5), 0, 85)) for _ in range(n)]
    return pd.DataFrame(
        {
            "image": names,
            "code": codes,
            "age_approx": with_gaps(rng, ages, 0.017),
            "anatom_site_general": with_gaps(rng, sites, 0.10),
            "lesion_id": with_gaps(rng, lesions, 0.08),
            "sex": with_gaps(rng, choose(rng, {"male": 0.52, "female": 0.48}, n), 0.015),
        }
    )


def plan_images(
    rng: np.random.Generator,
    images: pd.Series,
    folder: str,
    diagnoses: pd.Series,
    looks: list[PatientLook],
    sizes: list[tuple[int, int]],
    atypia: dict[str, tuple[float, float]] | None = None,
) -> list[PlannedImage]:
    """One image to draw per name: a lesion of its diagnosis on its patient's skin, at one of `sizes`
    (either way round), written to FOLDER/<name>.jpg."""
    out = []
    for name, diag, look in zip(images, diagnoses, looks, strict=True):
        params = sample_lesion(rng, diag, look, atypia)
        w, h = sizes[int(rng.integers(len(sizes)))]
        if rng.random() < 0.5:  # portrait and landscape both occur
            w, h = h, w
        seed = int(rng.integers(2**63))
        out.append(
            PlannedImage(f"{folder}/{name}.jpg", seed, look, params, w, h, quality=params.jpeg_quality)
        )
    return out


def _copy(rng: np.random.Generator, src: PlannedImage, path: str) -> PlannedImage:
    transform = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
    quality = int(rng.integers(80, 95))
    return PlannedImage(path, src.seed, src.look, src.params, src.width, src.height, src, transform, quality)


def _apply(transform: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for step in transform.split("+"):
        if step == "hflip":
            img = img[:, ::-1]
        elif step == "vflip":
            img = img[::-1]
        elif step == "rot90":
            img = np.rot90(img)
        elif step == "rot180":
            img = img[::-1, ::-1]
        elif step == "rescale":
            f = rng.uniform(0.6, 0.9)
            size = (round(img.shape[1] * f), round(img.shape[0] * f))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        elif step == "crop":
            f = rng.uniform(0.8, 0.92)
            h, w = img.shape[:2]
            ch, cw = round(h * f), round(w * f)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            img = img[y0 : y0 + ch, x0 : x0 + cw]
    return np.ascontiguousarray(img)


def _draw(item: PlannedImage) -> np.ndarray:
    if item.copy_of is None:
        pixels = render(item.seed, item.look, item.params, item.width, item.height)
        return pixels if item.device is None else through_device(pixels, item.device)
    pixels = _draw(item.copy_of)
    return _apply(item.transform, pixels, np.random.default_rng(item.seed ^ 0x5EED))


def _write(item: PlannedImage, root: Path) -> tuple[int, int]:
    pixels = _draw(item)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=item.quality)
    path = root / item.path
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    return pixels.shape[1], pixels.shape[0]


def _write_chunk(items: list[PlannedImage], root: Path) -> list[tuple[int, int]]:
    return [_write(it, root) for it in items]


@dataclass
class SynthSummary:
    """Where things were written and how many."""

    root: Path
    n_train_2020: int
    n_test_2020: int
    n_2019: int
    n_duplicates: int


def check_out(out: Path, folders: tuple[str, ...], force: bool) -> None:
    """Refuse to write OUT/<folder> over data that synth did not make (OUT has no truth/ folder)
    unless `force`, and a file where the folder OUT belongs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; a folder is wanted here")
    found = [out / name for name in folders if (out / name).exists()]
    if found and not (out / "truth").is_dir() and not force:
        raise ValueError(
            f"{out} already holds {', '.join(p.name for p in found)}/ that synth did not write "
            "(no truth/ folder): choose another folder, or pass --force to replace it"
        )


def generate(
    out: Path, cfg: SynthConfig | None = None, workers: int = 0, progress: bool = True, force: bool = False
) -> SynthSummary:
    """Write a synthetic ISIC 2020 + 2019 dataset under `out` (see the module docstring); data
    there that synth did not write is replaced only with `force`."""
    cfg = cfg or SynthConfig()
    if cfg.sizes not in _SIZES:
        raise ValueError(f"sizes must be one of {', '.join(_SIZES)}, got {cfg.sizes!r}")
    for name, n in [
        ("n_train_2020", cfg.n_train_2020),
        ("n_test_2020", cfg.n_test_2020),
        ("n_2019", cfg.n_2019),
    ]:
        if n < MIN_IMAGES:
            raise ValueError(
                f"{name} is {n}: at least {MIN_IMAGES} images are needed so every diagnosis occurs"
            )
    for name, rate in [
        ("melanoma_rate_2020", cfg.melanoma_rate_2020),
        ("melanoma_rate_2019", cfg.melanoma_rate_2019),
    ]:
        if not 0 < rate < 0.5:
            raise ValueError(f"{name} is {rate}: expected a share between 0 and 0.5")
    out = Path(out)
    check_out(out, ("isic2020", "isic2019"), force)
    rng = np.random.default_rng(cfg.seed)
    taken_images: set[int] = set(range(0, 80000))  # 2019 names live below ISIC_0080000
    taken_patients: set[int] = set()
    train, train_looks = isic2020_table(
        rng, cfg.n_train_2020, cfg.melanoma_rate_2020, taken_images, taken_patients
    )
    test, test_looks = isic2020_table(
        rng, cfg.n_test_2020, cfg.melanoma_rate_2020, taken_images, taken_patients
    )
    ext = _isic2019_table(rng, cfg.n_2019, cfg.melanoma_rate_2019)

    sizes = _SIZES[cfg.sizes]
    plans = {
        "train": plan_images(
            rng,
            train.image_name,
            "isic2020/jpeg/train",
            train.diagnosis.map(RAW_TO_NAME),
            [train_looks[p] for p in train.patient_id],
            sizes["isic2020"],
        ),
        "test": plan_images(
            rng,
            test.image_name,
            "isic2020/jpeg/test",
            test.diagnosis.map(RAW_TO_NAME),
            [test_looks[p] for p in test.patient_id],
            sizes["isic2020"],
        ),
        "ext": plan_images(
            rng,
            ext.image,
            f"isic2019/{IMAGES_2019}",
            ext.code.map(CODES_2019),
            [sample_patient(rng) for _ in range(len(ext))],
            sizes["isic2019"],
        ),
    }
    train, test, ext, dup_rows = _plant_duplicates(rng, cfg, train, test, ext, plans, taken_images)

    for sub in ("isic2020/jpeg/train", "isic2020/jpeg/test", f"isic2019/{IMAGES_2019}", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    items = plans["train"] + plans["test"] + plans["ext"]
    shapes = write_images(items, out, workers, progress)

    _write_tables(out, train, test, ext)
    _write_truth(out, cfg, train, test, ext, items, shapes, dup_rows)
    return SynthSummary(out, len(train), len(test), len(ext), len(dup_rows))


def _plant_duplicates(
    rng: np.random.Generator,
    cfg: SynthConfig,
    train: pd.DataFrame,
    test: pd.DataFrame,
    ext: pd.DataFrame,
    plans: dict[str, list[PlannedImage]],
    taken_images: set[int],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict]]:
    """Add transformed copies of some images, within and across 2019 and 2020."""
    n_groups = round(cfg.duplicate_rate * (len(train) + len(test) + len(ext)))
    kinds = ["2020-2020", "2019-2019", "2020-2019", "2019-2020test"]
    mappable = [i for i, d in enumerate(train.diagnosis) if d in _2020_TO_CODE]
    new = {"train": [], "test": [], "ext": []}
    rows: list[dict] = []
    for group in range(n_groups):
        kind = kinds[group % len(kinds)]
        if kind == "2020-2020":
            i = int(rng.integers(len(train)))
            src_row, src_set, dst_set = train.iloc[i].to_dict(), "train", "train"
        elif kind == "2020-2019":
            i = int(mappable[int(rng.integers(len(mappable)))]) if mappable else int(rng.integers(len(train)))
            src_row, src_set, dst_set = train.iloc[i].to_dict(), "train", "ext"
        else:
            i = int(rng.integers(len(ext)))
            src_row, src_set = ext.iloc[i].to_dict(), "ext"
            dst_set = "ext" if kind == "2019-2019" else "test"
        src = plans[src_set][i]
        number = unique_ids(rng, 1, 15000, 9999999, taken_images)[0] if dst_set != "ext" else None
        row = dict(src_row)
        if dst_set == "train":
            row["image_name"] = f"ISIC_{number:07d}"
        elif dst_set == "test":
            row = _2019_row_as_2020_test(rng, src_row, test)
            row["image_name"] = f"ISIC_{number:07d}"
        elif src_set == "train":  # a 2020 image that also sits in the 2019 archive
            row = _2020_row_as_2019(src_row)
        name = row["image_name"] if dst_set != "ext" else None
        if dst_set == "ext":
            name = _free_2019_name(rng, ext, new["ext"])
            row["image"] = name
        folder = {
            "train": "isic2020/jpeg/train",
            "test": "isic2020/jpeg/test",
            "ext": f"isic2019/{IMAGES_2019}",
        }[dst_set]
        copy = _copy(rng, src, f"{folder}/{name}.jpg")
        plans[dst_set].append(copy)
        new[dst_set].append(row)
        src_name = src_row.get("image_name") or src_row.get("image")
        rows.append(
            {
                "group": group,
                "image_name": src_name,
                "dataset": _DATASET[src_set],
                "role": "original",
                "transform": "",
            }
        )
        rows.append(
            {
                "group": group,
                "image_name": name,
                "dataset": _DATASET[dst_set],
                "role": "copy",
                "transform": copy.transform,
            }
        )
    train = pd.concat([train, pd.DataFrame(new["train"], columns=train.columns)], ignore_index=True)
    test = pd.concat([test, pd.DataFrame(new["test"], columns=test.columns)], ignore_index=True)
    ext = pd.concat([ext, pd.DataFrame(new["ext"], columns=ext.columns)], ignore_index=True)
    return train, test, ext, rows


_DATASET = {"train": "isic2020_train", "test": "isic2020_test", "ext": "isic2019"}


def _free_2019_name(rng: np.random.Generator, ext: pd.DataFrame, added: list[dict]) -> str:
    used = set(ext.image) | {r["image"] for r in added}
    while True:
        name = f"ISIC_{int(rng.integers(80000)):07d}"
        if name not in used and f"{name}_downsampled" not in used:
            return name


def _2020_row_as_2019(row: dict) -> dict:
    site = row["anatom_site_general_challenge"]
    return {
        "code": _2020_TO_CODE.get(row["diagnosis"], "UNK"),
        "age_approx": row["age_approx"],
        "anatom_site_general": None if pd.isna(site) else _TO_2019_SITE.get(site, site),
        "lesion_id": None,
        "sex": row["sex"],
    }


def _2019_row_as_2020_test(rng: np.random.Generator, row: dict, test: pd.DataFrame) -> dict:
    pid = test.patient_id.iloc[int(rng.integers(len(test)))]
    site = row["anatom_site_general"]
    code = row["code"]
    diagnosis = {"MEL": "melanoma", "NV": "nevus", "BKL": "seborrheic keratosis"}.get(code, "unknown")
    return {
        "patient_id": pid,
        "sex": row["sex"],
        "age_approx": row["age_approx"],
        "anatom_site_general_challenge": None if pd.isna(site) else ("torso" if "torso" in site else site),
        "diagnosis": diagnosis,
        "benign_malignant": "malignant" if code == "MEL" else "benign",
        "target": int(code == "MEL"),
    }


def write_images(items: list[PlannedImage], out: Path, workers: int, progress: bool) -> list[tuple[int, int]]:
    """Draw and write every planned image under `out` in `workers` processes; their (width, height)."""
    workers = workers or min(os.cpu_count() or 1, 8)
    return map_chunks(_write_chunk, items, "synth: drawing images", workers, progress, chunk=32, extra=(out,))


def _write_tables(out: Path, train: pd.DataFrame, test: pd.DataFrame, ext: pd.DataFrame) -> None:
    train[COLUMNS_2020_TRAIN].to_csv(out / "isic2020/train.csv", index=False)
    test[COLUMNS_2020_TEST].to_csv(out / "isic2020/test.csv", index=False)
    pd.DataFrame({"image_name": test.image_name, "target": 0}).to_csv(
        out / "isic2020/sample_submission.csv", index=False
    )
    truth = pd.DataFrame({"image": ext.image})
    for code in COLUMNS_2019_TRUTH[1:]:
        truth[code] = (ext.code == code).astype(float)
    truth.to_csv(out / "isic2019" / TRUTH_2019, index=False)
    ext[COLUMNS_2019_META].to_csv(out / "isic2019" / META_2019, index=False)


def image_records(
    items: list[PlannedImage], shapes: list[tuple[int, int]], datasets: list[str], patients: list, raw: list
) -> list[dict]:
    """One truth/images.csv record per image drawn: its name, dataset, patient and raw label, every
    generation parameter, its size and where the lesion is."""
    records = []
    for it, (w, h), ds, pid, label in zip(items, shapes, datasets, patients, raw, strict=True):
        rec = {"image_name": Path(it.path).stem, "dataset": ds, "patient_id": pid, "raw_label": label}
        rec.update(params_record(it.look, it.params))
        rec.update({"width": w, "height": h, "copy_transform": it.transform})
        # Where the lesion is (fractions of the image); unknown for transformed copies.
        where = (
            lesion_geometry(it.seed, it.look, it.params, it.width, it.height) if it.copy_of is None else {}
        )
        rec.update({k: where.get(k, float("nan")) for k in ("lesion_x", "lesion_y", "lesion_r")})
        records.append(rec)
    return records


def _write_truth(
    out: Path,
    cfg: SynthConfig,
    train: pd.DataFrame,
    test: pd.DataFrame,
    ext: pd.DataFrame,
    items: list[PlannedImage],
    shapes: list[tuple[int, int]],
    dup_rows: list[dict],
) -> None:
    datasets = ["isic2020_train"] * len(train) + ["isic2020_test"] * len(test) + ["isic2019"] * len(ext)
    patients = list(train.patient_id) + list(test.patient_id) + [None] * len(ext)
    raw = list(train.diagnosis) + list(test.diagnosis) + list(ext.code)
    records = image_records(items, shapes, datasets, patients, raw)
    pd.DataFrame(records).to_csv(out / "truth/images.csv", index=False, float_format="%.6g")
    pd.DataFrame(dup_rows, columns=["group", "image_name", "dataset", "role", "transform"]).to_csv(
        out / "truth/duplicates.csv", index=False
    )
    pd.DataFrame({"image_name": test.image_name, "target": test.target}).to_csv(
        out / "truth/test_labels.csv", index=False
    )
    (out / "truth/config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
