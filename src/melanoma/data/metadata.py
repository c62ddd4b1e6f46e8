"""Patient metadata features of the winning solution (for models with a metadata branch)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def meta_features(table: pd.DataFrame, left_out: np.ndarray | pd.Series | None = None) -> pd.DataFrame:
    """Metadata features for every row of an ingested table (train and test together).

    sex: male 1, female 0, missing -1; age_approx / 90, missing 0; n_images: log1p of the
    patient's image count within its split, not counting the rows marked in `left_out` (the
    near-duplicates dropped from training, fold -1: the winners counted after dropping them);
    rows without a patient count 1; image_size: log of the image file's size in bytes;
    site_*: one-hot of the site over all rows, plus site_nan.
    """
    out = pd.DataFrame(index=table.index)
    out["sex"] = table.sex.map({"male": 1.0, "female": 0.0}).fillna(-1.0)
    out["age_approx"] = table.age_approx.astype(float).fillna(0.0) / 90.0
    kept = np.ones(len(table)) if left_out is None else 1.0 - np.asarray(left_out, dtype=bool)
    counts = pd.Series(kept, index=table.index).groupby([table.split, table.patient_id]).transform("sum")
    out["n_images"] = np.log1p(counts.where(table.patient_id.notna(), 1).astype(float))
    out["image_size"] = np.log(table.image_path.map(os.path.getsize).astype(float))
    sites = pd.get_dummies(table.anatom_site, prefix="site", dummy_na=True, dtype=float)
    sites = sites.rename(columns={c: "site_nan" for c in sites.columns if c.endswith("_nan")})
    return pd.concat([out, sites[sorted(c for c in sites if c != "site_nan") + ["site_nan"]]], axis=1)


def dropped_rows(table: pd.DataFrame) -> np.ndarray:
    """Train rows left out of every fold (fold -1: dropped near-duplicates), from a table with folds."""
    if "fold" not in table:
        return np.zeros(len(table), bool)
    return ((table.split == "train") & (table.fold < 0)).to_numpy()
