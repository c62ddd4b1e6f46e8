"""A labelled external set, as another clinic (or the same one, later) would send it.

`melanoma synth OUT --centre shifted` writes OUT/isic2020/ (train.csv with the labels, test.csv,
jpeg/) from another clinic: another device (render.Device: a warmer white balance, a dark ring at
the field's edge, under half the resolution, optical blur), another patient mix (darker skin tones,
more acral and head-and-neck lesions, older patients, a screening clinic's earlier melanomas:
SHIFTED_ATYPIA), the diseases otherwise drawn the same way, and melanoma enriched as external sets
are. `--centre same` writes the same clinic again (the base
generator with another seed: an in-distribution external set). OUT/truth/ as ever: every image's
parameters and skin colour (skin_ita), the test labels, and config.json with the shift.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from melanoma.data.formats import COLUMNS_2020_TEST, COLUMNS_2020_TRAIN
from melanoma.fileio import write_csv
from melanoma.synthetic.generate import (
    MIN_IMAGES,
    check_out,
    image_records,
    isic2020_table,
    plan_images,
    write_images,
)
from melanoma.synthetic.render import Device
from melanoma.targets import RAW_TO_NAME

Centre = Literal["same", "shifted"]
# The other clinic's sites: more acral, head-and-neck and mucosal lesions than ISIC 2020's.
SHIFTED_SITES = {
    "torso": 0.3, "lower extremity": 0.2, "upper extremity": 0.12, "head/neck": 0.2, "palms/soles": 0.14,
    "oral/genital": 0.04,
}  # fmt: skip
SHIFTED_TONE_SKEW = (
    0.9  # render.TONE_SKEW is 2.5: here about half the patients are of intermediate or darker skin
)
SHIFTED_DEVICE = Device()
# Its case mix: a screening clinic, whose melanomas are found earlier (thinner, fewer colours, less
# asymmetric: render's atypia drawn from Beta(2.0, 3.6) instead of Beta(3.2, 2.4), close to the
# nevi's) and whose nevi are more atypical; the diseases' looks are otherwise drawn alike.
SHIFTED_ATYPIA = {"melanoma": (2.0, 3.6), "nevus": (2.0, 4.0)}
_SIZES = [(240, 160), (256, 144), (200, 150), (192, 192), (288, 192)]  # the base generator's small sizes


@dataclass
class CentreConfig:
    """What the external set holds: labelled images (train.csv), a few unlabelled ones (test.csv)."""

    n_images: int = 600
    melanoma_rate: float = 0.08
    centre: Centre = "shifted"
    n_test: int = MIN_IMAGES
    seed: int = 1


def generate_centre(
    out: Path, cfg: CentreConfig | None = None, workers: int = 0, progress: bool = True, force: bool = False
) -> dict[str, int]:
    """Write OUT/isic2020/ and OUT/truth/ for the centre; returns counts. A folder synth did not write
    (no OUT/truth/) is replaced only with `force`."""
    cfg = cfg or CentreConfig()
    if cfg.centre not in ("same", "shifted"):
        raise ValueError(f"centre must be same or shifted, got {cfg.centre!r}")
    if cfg.n_images < MIN_IMAGES or cfg.n_test < MIN_IMAGES:
        raise ValueError(
            f"at least {MIN_IMAGES} labelled and {MIN_IMAGES} test images are needed, got {cfg.n_images} and {cfg.n_test}"
        )
    out = Path(out)
    check_out(out, ("isic2020",), force)
    shifted = cfg.centre == "shifted"
    rng = np.random.default_rng(cfg.seed)
    taken_images: set[int] = set(range(0, 80000))
    taken_patients: set[int] = set()
    sites, skew = (SHIFTED_SITES, SHIFTED_TONE_SKEW) if shifted else (None, None)
    tables = {
        split: isic2020_table(rng, n, cfg.melanoma_rate, taken_images, taken_patients, sites, skew)
        for split, n in (("train", cfg.n_images), ("test", cfg.n_test))
    }
    if shifted:  # older patients
        for table, _ in tables.values():
            table["age_approx"] = (table.age_approx + 10).clip(upper=90)
    items = []
    for split, (table, looks) in tables.items():
        planned = plan_images(rng, table.image_name, f"isic2020/jpeg/{split}", table.diagnosis.map(RAW_TO_NAME),
                              [looks[p] for p in table.patient_id], _SIZES, SHIFTED_ATYPIA if shifted else None)  # fmt: skip
        items += [replace(it, device=SHIFTED_DEVICE) for it in planned] if shifted else planned
    for sub in ("isic2020/jpeg/train", "isic2020/jpeg/test", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shapes = write_images(items, out, workers, progress)
    train, test = tables["train"][0], tables["test"][0]
    write_csv(train[COLUMNS_2020_TRAIN], out / "isic2020" / "train.csv")
    write_csv(test[COLUMNS_2020_TEST], out / "isic2020" / "test.csv")
    datasets = ["isic2020_train"] * len(train) + ["isic2020_test"] * len(test)
    patients = [*train.patient_id, *test.patient_id]
    records = image_records(items, shapes, datasets, patients, [*train.diagnosis, *test.diagnosis])
    pd.DataFrame(records).to_csv(out / "truth" / "images.csv", index=False, float_format="%.6g")
    write_csv(test[["image_name", "target"]], out / "truth" / "test_labels.csv")
    shift = {"sites": SHIFTED_SITES, "tone_skew": SHIFTED_TONE_SKEW, "device": asdict(SHIFTED_DEVICE),
             "atypia": SHIFTED_ATYPIA, "age_added": 10} if shifted else None  # fmt: skip
    (out / "truth" / "config.json").write_text(json.dumps({**asdict(cfg), "shift": shift}, indent=2) + "\n")
    return {"train": len(train), "melanomas": int(train.target.sum()), "test": len(test),
            "patients": int(train.patient_id.nunique())}  # fmt: skip
