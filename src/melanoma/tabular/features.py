"""Features of the ISIC 2024 tabular model, and the guard that keeps the label out of them.

Built from the metadata columns both train and test have (formats.COLUMNS_2024_TEST):
- the measurements (age, long diameter, every tbp_lv_* number) as they are;
- the categories (sex, site, tile type, body location) as LightGBM categories;
- ratios the top teams used: minor axis / long diameter, area / perimeter^2, |H - Hext|,
  |L - Lext|, the colour difference sqrt(dA^2 + dB^2 + dL^2) and a few more (RATIOS);
- "ugly duckling" features: every number standardised within its patient, as a z-score and
  min-max ((x - min) / (max - min)), so a lesion unlike its patient's others stands out;
- counts per patient: lesions, and lesions at the same site.
No feature reads a train-only column (the target, the diagnosis columns, what comes after the
diagnosis): check_features refuses them by name, and build_features never touches them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from melanoma.data.formats import (
    CATEGORICAL_2024,
    COLUMNS_2024_TEST,
    IDENTIFIERS_2024,
    NUMERIC_2024,
    TRAIN_ONLY_2024,
)

EPS = 1e-6
CATEGORIES = [c for c in CATEGORICAL_2024 if c != "attribution"]  # the centre: see build_features
RATIOS = {
    "lesion_size_ratio": lambda t: t.tbp_lv_minorAxisMM / t.clin_size_long_diam_mm,
    "lesion_shape_index": lambda t: t.tbp_lv_areaMM2 / t.tbp_lv_perimeterMM**2,
    "hue_contrast": lambda t: (t.tbp_lv_H - t.tbp_lv_Hext).abs(),
    "luminance_contrast": lambda t: (t.tbp_lv_L - t.tbp_lv_Lext).abs(),
    "lesion_color_difference": lambda t: np.sqrt(
        t.tbp_lv_deltaA**2 + t.tbp_lv_deltaB**2 + t.tbp_lv_deltaL**2
    ),
    "border_complexity": lambda t: t.tbp_lv_norm_border + t.tbp_lv_symm_2axis,
    "color_uniformity": lambda t: t.tbp_lv_color_std_mean / (t.tbp_lv_radial_color_std_max + EPS),
    "perimeter_to_area": lambda t: t.tbp_lv_perimeterMM / (t.tbp_lv_areaMM2 + EPS),
    "area_to_diameter": lambda t: t.tbp_lv_areaMM2 / (t.clin_size_long_diam_mm**2 + EPS),
    "normalized_lesion_size": lambda t: t.clin_size_long_diam_mm / (t.age_approx + EPS),
}


class LeakError(ValueError):
    """A column that would leak the label was asked for as a feature."""


def check_features(columns: Iterable[str]) -> None:
    """Refuse any train-only column (the label, the diagnosis, what comes after it), the
    identifiers, and any column the test metadata does not have."""
    columns = list(columns)
    leaks = [c for c in columns if c in TRAIN_ONLY_2024]
    if leaks:
        raise LeakError(
            f"{', '.join(leaks)}: train-only column(s) of ISIC 2024 (the label, the diagnosis or what comes "
            "after it; test-metadata.csv does not have them): they leak the label and can never be features"
        )
    ids = [c for c in columns if c in IDENTIFIERS_2024]
    if ids:
        raise ValueError(
            f"{', '.join(ids)}: an identifier, not a measurement; as a feature it lets the trees memorise "
            "rows or patients (per-patient features come from --patient-stats)"
        )
    unknown = [c for c in columns if c not in COLUMNS_2024_TEST]
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not a column of test-metadata.csv; features come from the columns both "
            "train and test have"
        )


def base_columns(extra: Iterable[str] = (), drop: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(numeric, categorical) metadata columns used as they are: the defaults, plus `extra`, less
    `drop`; every one checked by check_features."""
    extra, drop = list(extra), list(drop)
    check_features(extra + drop)
    numeric = [c for c in NUMERIC_2024 if c not in drop]
    categorical = [c for c in CATEGORIES if c not in drop]
    for c in extra:  # a column that is not a measurement (image_type, copyright_license) is a category
        if c in NUMERIC_2024 and c not in numeric:
            numeric.append(c)
        elif c not in NUMERIC_2024 and c not in categorical:
            categorical.append(c)
    return numeric, categorical


def build_features(
    meta: pd.DataFrame, extra: Iterable[str] = (), drop: Iterable[str] = (), patient_stats: bool = True
) -> pd.DataFrame:
    """The feature matrix (one row per metadata row, same index). `extra` adds shared columns (the
    centre, `attribution`, is left out by default: held-out-centre folds would meet unseen
    categories); `drop` removes default ones."""
    numeric, categorical = base_columns(extra, drop)
    missing = [c for c in numeric + categorical + ["patient_id"] if c not in meta.columns]
    if missing:
        raise ValueError(f"metadata lacks column(s) {', '.join(missing)}")
    out = meta[numeric].apply(pd.to_numeric, errors="coerce").astype("float64")
    for name, formula in RATIOS.items():
        if name not in drop:
            out[name] = formula(meta).astype("float64").replace([np.inf, -np.inf], np.nan)
    if patient_stats:
        by = meta.patient_id.astype(str)
        grouped = out.groupby(by)
        mean, std = grouped.transform("mean"), grouped.transform("std")
        low, high = grouped.transform("min"), grouped.transform("max")
        z = ((out - mean) / (std + EPS)).add_suffix("_patient_z")
        span = ((out - low) / (high - low + EPS)).add_suffix("_patient_minmax")
        out = pd.concat([out, z, span], axis=1)
        out["patient_lesions"] = by.map(by.value_counts()).astype("float64")
        site = meta.anatom_site_general.astype(str)
        out["patient_site_lesions"] = by.groupby([by, site]).transform("size").astype("float64")
    for c in categorical:
        out[c] = meta[c].astype("string").fillna("missing").astype("category")
    assert not set(out.columns) & set(TRAIN_ONLY_2024), "a train-only column became a feature"
    return out
