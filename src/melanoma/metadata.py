"""Patient metadata features of the winning solution (for models with a metadata branch)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def meta_features(table: pd.DataFrame) -> pd.DataFrame:
    """Metadata features for every row of an ingested table (train and test together).

    sex: male 1, female 0, missing -1; age_approx / 90, missing 0; n_images: log1p of the
    patient's image count within its split (rows without a patient count 1); image_size: log of
    the image file's size in bytes; site_*: one-hot of the site over all rows, plus site_nan.
    """
    out = pd.DataFrame(index=table.index)
    out["sex"] = table.sex.map({"male": 1.0, "female": 0.0}).fillna(-1.0)
    out["age_approx"] = table.age_approx.astype(float).fillna(0.0) / 90.0
    counts = table.groupby(["split", "patient_id"]).image_name.transform("count")
    out["n_images"] = np.log1p(counts.where(table.patient_id.notna(), 1).astype(float))
    out["image_size"] = np.log(table.image_path.map(os.path.getsize).astype(float))
    sites = pd.get_dummies(table.anatom_site, prefix="site", dummy_na=True, dtype=float)
    sites = sites.rename(columns={c: "site_nan" for c in sites.columns if c.endswith("_nan")})
    return pd.concat([out, sites[sorted(c for c in sites if c != "site_nan") + ["site_nan"]]], axis=1)
