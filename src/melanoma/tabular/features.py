"""Features of the ISIC 2024 tabular model, in named groups, and the guard that keeps the label out.

Built from the metadata columns both train and test have (formats.COLUMNS_2024_TEST); every
group but the first can be left out by name (`--drop-features group:NAME`):
- raw: the measurements (age, long diameter, every tbp_lv_* number) as they are, and the
  categories (sex, site, tile type, body location) as categories;
- ratios: the ones the top teams used: minor axis / long diameter, area / perimeter^2,
  |H - Hext|, |L - Lext|, the colour difference sqrt(dA^2 + dB^2 + dL^2) and more (RATIOS);
- patient: every number standardised within its patient, as a z-score and min-max
  ((x - min) / (max - min)), and counts per patient (lesions, lesions at the same site);
- neighbourhood: z-scores within patient x body location, patient x simple location and
  patient x site (a lesion unlike its neighbours, not only unlike the whole patient);
- ugly_duckling: per lesion, over all its numbers, the count of |z| > 2, the largest |z| and the
  spread of |z|, within its patient and within patient x location;
- centre: every number z-scored within its centre (attribution): one centre's device and
  population moved onto another's scale;
- outlier: a local-outlier-factor score of the lesion among its patient's lesions (1st place);
- ranks: every number's percentile rank within its patient (2nd place);
- image_context (with image runs stacked, image_context()): each image model's score divided by
  its patient's mean and z-scored within patient, centre, body location and age, and the spread
  of the models' scores (the raw scores themselves always stay).
Every grouping statistic is computed over the rows given (train and test scored apart), from the
columns the test metadata has: a train-only column never reaches a feature (build_features reads
only shared columns, by construction, and refuses train-only ones by name).

EPS is 1e-5, the top teams' value (ours was 1e-6), so our features equal theirs on the same rows;
the two differ only where a denominator is near the data's own recording resolution (the TBP
values carry four decimals, so 1e-4), where neither value is a measurement of anything.
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

EPS = 1e-5
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
# The neighbourhoods a lesion is compared within, beyond its whole patient: suffix -> column.
NEIGHBOURHOODS = {
    "loc": "tbp_lv_location",
    "locsimple": "tbp_lv_location_simple",
    "site": "anatom_site_general",
}
GROUPS = (
    "raw", "ratios", "patient", "neighbourhood", "ugly_duckling", "centre", "outlier", "ranks", "image_context",
)  # fmt: skip
PER_PATIENT = (
    "patient",
    "neighbourhood",
    "ugly_duckling",
    "outlier",
    "ranks",
    "image_context",
)  # --no-patient-stats
GROUP_PREFIX = "group:"
LOF_NEIGHBOURS = 20


class LeakError(ValueError):
    """A column that would leak the label was asked for as a feature."""


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(columns, groups) of a --drop-features list: `group:NAME` entries are groups, the rest
    columns; an unknown group is one error listing the groups."""
    columns, groups = [], []
    for name in names:
        if name.startswith(GROUP_PREFIX):
            group = name[len(GROUP_PREFIX) :]
            if group not in GROUPS:
                raise ValueError(f"{name}: no such feature group; the groups are {', '.join(GROUPS)}")
            groups.append(group)
        else:
            columns.append(name)
    return columns, groups


def check_features(columns: Iterable[str]) -> None:
    """Refuse any train-only column (the label, the diagnosis, what comes after it), the
    identifiers, and any column the test metadata does not have (`group:NAME` entries are
    checked as group names)."""
    columns, _ = split_names(columns)
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
            "train and test have (or group:NAME, one of " + ", ".join(GROUPS) + ")"
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


def zscore(values: pd.DataFrame, by: pd.Series | list[pd.Series], suffix: str) -> pd.DataFrame:
    """(x - mean) / (std + EPS) within each group of `by`; NaN for a group of one."""
    grouped = values.groupby(by)
    z = (values - grouped.transform("mean")) / (grouped.transform("std") + EPS)
    return z.add_suffix(suffix)


def _duckling(z: pd.DataFrame, name: str) -> pd.DataFrame:
    """The 'ugly duckling' block of one neighbourhood: over a lesion's z-scores, how many lie
    beyond 2 in size, the largest and their spread."""
    size = z.abs()
    return pd.DataFrame(
        {
            f"ud_{name}_count2": (size > 2).sum(axis=1).astype("float64"),
            f"ud_{name}_max": size.max(axis=1),
            f"ud_{name}_std": size.std(axis=1),
        },
        index=z.index,
    )


def local_outlier(values: pd.DataFrame, patient: pd.Series) -> pd.Series:
    """Each lesion's local outlier factor among its patient's lesions (on the numbers z-scored
    within the patient, gaps as 0): about 1 for a typical lesion, larger for one unlike its
    neighbours; NaN for a patient of fewer than three lesions."""
    from sklearn.neighbors import LocalOutlierFactor

    out = pd.Series(np.nan, index=values.index, name="patient_lof")
    z = zscore(values, patient, "").fillna(0.0)
    for _, index in patient.groupby(patient).groups.items():
        if len(index) < 3:
            continue
        # at most 20 neighbours, and at most half the patient's others: with every other lesion
        # as a neighbour every lesion's density is the same and the factor is 1 for all
        lof = LocalOutlierFactor(n_neighbors=min(LOF_NEIGHBOURS, max(2, (len(index) - 1) // 2)))
        lof.fit(z.loc[index].to_numpy())
        out[index] = -lof.negative_outlier_factor_
    return out


def _per_patient(meta: pd.DataFrame, values: pd.DataFrame, groups: set[str]) -> list[pd.DataFrame]:
    """The groups computed within each patient (and its neighbourhoods)."""
    by = meta.patient_id.astype(str)
    parts: list[pd.DataFrame] = []
    patient_z = zscore(values, by, "_patient_z")
    if "patient" in groups:
        grouped = values.groupby(by)
        low, high = grouped.transform("min"), grouped.transform("max")
        site = meta.anatom_site_general.astype(str)
        counts = pd.DataFrame(
            {
                "patient_lesions": by.map(by.value_counts()).astype("float64"),
                "patient_site_lesions": by.groupby([by, site]).transform("size").astype("float64"),
            }
        )
        parts += [patient_z, ((values - low) / (high - low + EPS)).add_suffix("_patient_minmax"), counts]
    if "neighbourhood" in groups or "ugly_duckling" in groups:
        near = {s: zscore(values, [by, meta[c].astype(str)], f"_{s}_z") for s, c in NEIGHBOURHOODS.items()}
        if "neighbourhood" in groups:
            parts += list(near.values())
        if "ugly_duckling" in groups:
            parts += [_duckling(patient_z, "patient"), _duckling(near["loc"], "loc")]
    if "outlier" in groups:
        parts.append(local_outlier(values, by).to_frame())
    if "ranks" in groups:
        parts.append(values.groupby(by).rank(pct=True).add_suffix("_patient_rank"))
    return parts


def build_features(
    meta: pd.DataFrame, extra: Iterable[str] = (), drop: Iterable[str] = (), patient_stats: bool = True
) -> pd.DataFrame:
    """The feature matrix (one row per metadata row, same index). `extra` adds shared columns (the
    centre, `attribution`, is left out as a category by default: held-out-centre folds would meet
    unseen categories; the centre group normalises within it instead); `drop` removes default
    columns and, as `group:NAME`, whole groups; `patient_stats=False` drops every per-patient group."""
    columns, _ = split_names(drop)
    groups = kept_groups(drop, patient_stats)
    numeric, categorical = base_columns(extra, columns)
    needed = numeric + categorical + ["patient_id", "attribution", *NEIGHBOURHOODS.values()]
    missing = [c for c in dict.fromkeys(needed) if c not in meta.columns]
    if missing:
        raise ValueError(f"metadata lacks column(s) {', '.join(missing)}")
    meta = meta[[c for c in meta.columns if c in COLUMNS_2024_TEST]]  # the shared columns, nothing else
    values = meta[numeric].apply(pd.to_numeric, errors="coerce").astype("float64")
    for name, formula in RATIOS.items():
        if name not in columns:
            values[name] = formula(meta).astype("float64").replace([np.inf, -np.inf], np.nan)
    if "ratios" not in groups:
        values = values[numeric]
    parts = [values]
    if "centre" in groups:
        parts.append(zscore(values, meta.attribution.astype(str), "_centre_z"))
    parts += _per_patient(meta, values, groups)
    out = pd.concat(parts, axis=1)
    if "raw" not in groups:
        out = out.drop(columns=numeric)
    for c in categorical:
        if "raw" in groups or c in extra:
            out[c] = meta[c].astype("string").fillna("missing").astype("category")
    assert not set(out.columns) & set(TRAIN_ONLY_2024), "a train-only column became a feature"
    return out


def image_context(meta: pd.DataFrame, scores: dict[str, np.ndarray], groups: Iterable[str]) -> pd.DataFrame:
    """Image models' scores as features (one column per model, named as given), and, unless the
    image_context group is dropped, each in context: over its patient's mean, z-scored within
    patient, centre, body location and age; with two or more models, their spread (std)."""
    frame = pd.DataFrame(scores, index=meta.index, dtype="float64")
    if "image_context" not in set(groups):
        return frame
    by = meta.patient_id.astype(str)
    parts = [
        frame,
        (frame / (frame.groupby(by).transform("mean") + EPS)).add_suffix("_patient_ratio"),
        zscore(frame, by, "_patient_z"),
        zscore(frame, meta.attribution.astype(str), "_centre_z"),
        zscore(frame, meta.tbp_lv_location.astype(str), "_loc_z"),
        zscore(frame, meta.age_approx.astype(str), "_age_z"),
    ]
    if len(scores) > 1:
        parts.append(frame.std(axis=1).rename("image_score_spread").to_frame())
    return pd.concat(parts, axis=1)


def kept_groups(drop: Iterable[str], patient_stats: bool = True) -> set[str]:
    """The groups a --drop-features list (and --no-patient-stats) leaves."""
    _, dropped = split_names(drop)
    return {g for g in GROUPS if g not in dropped and (patient_stats or g not in PER_PATIENT)}
