"""Subgroups: does the model work as well for every group of patients?

For each group of each column (sex, age band, anatomic site, data source, the estimated skin tone,
the recorded Fitzpatrick type where the data has one, and any column of the ingested table the user
names): images, melanomas, AUC and the sensitivity at the chosen operating point's threshold (found
on all rows), each with a bootstrap 95% interval. A group with fewer than MIN_EACH melanomas or
MIN_EACH other lesions is listed as too small to score, never left out. A group whose AUC interval
lies wholly below the overall AUC is flagged. Per column, the equity gap: the largest minus the
smallest AUC (and sensitivity) across its scored groups, with an interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.evaluation.operating_points import threshold_at
from melanoma.inputs.skin_tone import ITA_BINS, ita_group
from melanoma.metrics import bootstrap_ci, melanoma_auc
from melanoma.results import Subgroups
from melanoma.run import Run
from melanoma.targets import SOURCE_NAMES, class_names, melanoma_index

MIN_EACH = 5
COLUMNS = ("sex", "age_band", "anatom_site", "source")
AGE_BANDS = ("<30", "30-44", "45-59", "60-74", "75+", "unknown")
SKIN_TONE = "estimated skin tone (ITA)"  # always labelled estimated: no clinician recorded it
FITZPATRICK = "fitzpatrick_skin_type"  # as the data records it (ISIC Archive downloads)
ORDER = {
    "age_band": AGE_BANDS,
    SKIN_TONE: (*(name for _, name in ITA_BINS), "unknown"),
    FITZPATRICK: ("I", "II", "III", "IV", "V", "VI", "unknown"),
}


def age_band(age: pd.Series) -> pd.Series:
    """<30, 30-44, 45-59, 60-74, 75+, or unknown."""
    bands = pd.cut(age, [-np.inf, 30, 45, 60, 75, np.inf], right=False, labels=list(AGE_BANDS[:-1]))
    return bands.astype(object).where(age.notna(), "unknown")


def _sensitivity(score: np.ndarray, y: np.ndarray, threshold: float) -> float:
    return float(np.mean(score[y] >= threshold)) if y.any() else float("nan")


def subgroup_table(
    frame: pd.DataFrame,
    columns: tuple[str, ...],
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    min_each: int = MIN_EACH,
) -> pd.DataFrame:
    """frame: one row per image with `score`, `is_melanoma` and the columns. One row per
    (column, group), plus the overall row first."""
    score = frame.score.to_numpy(np.float64)
    y = frame.is_melanoma.to_numpy(bool)
    overall = melanoma_auc(score, y)

    def row(column: str, group: str, at: np.ndarray) -> dict:
        s, t = score[at], y[at]
        out = {"column": column, "group": group, "images": int(at.sum()), "melanomas": int(t.sum())}
        if t.sum() < min_each or (~t).sum() < min_each:
            return {**out, "status": f"too small to score (< {min_each} melanomas or < {min_each} others)"}
        auc, (low, high) = melanoma_auc(s, t), bootstrap_ci(melanoma_auc, s, t, n_boot, seed)
        sens = _sensitivity(s, t, threshold)
        s_low, s_high = bootstrap_ci(lambda a, b: _sensitivity(a, b, threshold), s, t, n_boot, seed)
        below = column != "all" and high < overall
        return {**out, "auc": auc, "auc_low": low, "auc_high": high, "sensitivity": sens,
                "sensitivity_low": s_low, "sensitivity_high": s_high,
                "status": "below overall" if below else "ok"}  # fmt: skip

    rows = [row("all", "all", np.ones(len(frame), bool))]
    for column in columns:
        values = frame[column].astype(object).where(frame[column].notna(), "unknown").astype(str)
        order = list(ORDER.get(column, sorted(values.unique())))
        for group in [g for g in order if (values == g).any()]:
            rows.append(row(column, group, (values == group).to_numpy()))
    return pd.DataFrame(rows)


def _spread(
    score: np.ndarray, y: np.ndarray, masks: list[np.ndarray], threshold: float, at: np.ndarray
) -> tuple[float, float]:
    """Largest minus smallest AUC and sensitivity across the groups (masks) of the rows `at`."""
    aucs = [melanoma_auc(score[at][m[at]], y[at][m[at]]) for m in masks]
    sens = [_sensitivity(score[at][m[at]], y[at][m[at]], threshold) for m in masks]
    return max(aucs) - min(aucs), max(sens) - min(sens)


def equity_gaps(
    frame: pd.DataFrame, groups: pd.DataFrame, threshold: float, n_boot: int = 1000, seed: int = 0
) -> list[dict]:
    """Per column with two or more scored groups (not 'unknown'): the largest minus the smallest
    AUC, and sensitivity at `threshold`, across them, each with a percentile bootstrap 95% interval
    (rows resampled together; resamples leaving a group with one class are skipped)."""
    score, y = frame.score.to_numpy(np.float64), frame.is_melanoma.to_numpy(bool)
    out: list[dict] = []
    if "auc" not in groups:  # no group large enough to score
        return out
    for column in [c for c in dict.fromkeys(groups.column) if c != "all"]:
        scored = groups[(groups.column == column) & groups.auc.notna() & (groups.group != "unknown")]
        if len(scored) < 2:
            continue
        values = frame[column].astype(object).where(frame[column].notna(), "unknown").astype(str).to_numpy()
        masks = [values == g for g in scored.group]
        rng = np.random.default_rng(seed)
        draws = np.array(
            [
                _spread(score, y, masks, threshold, rng.integers(0, len(frame), len(frame)))
                for _ in range(n_boot)
            ]
        ).reshape(-1, 2)
        draws = draws[~np.isnan(draws).any(axis=1)]
        (auc_low, sens_low), (auc_high, sens_high) = (
            np.percentile(draws, [2.5, 97.5], axis=0) if len(draws) else np.full((2, 2), np.nan)
        )
        auc_gap, sens_gap = _spread(score, y, masks, threshold, np.arange(len(frame)))
        out.append({
            "column": column, "groups": scored.group.tolist(), "highest": scored.group[scored.auc.idxmax()],
            "lowest": scored.group[scored.auc.idxmin()], "auc_gap": auc_gap, "auc_gap_low": float(auc_low),
            "auc_gap_high": float(auc_high), "sensitivity_gap": sens_gap, "sensitivity_gap_low": float(sens_low),
            "sensitivity_gap_high": float(sens_high),
        })  # fmt: skip
    return out


def group_frame(
    rows: pd.DataFrame, score: np.ndarray, is_melanoma: np.ndarray, tones: tuple[pd.Series, str] | None = None
) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """The scored rows (ingested table rows, in score order) with the groups of every column
    subgroups reports: sex, age band, site, source; the estimated skin tone when `tones` (each
    image's ITA by image_name, and how it was estimated) is given; the recorded Fitzpatrick type where
    the rows have one. Returns the frame, its group columns and how each estimated one was estimated."""
    frame = pd.DataFrame(
        {"score": np.asarray(score, np.float64), "is_melanoma": np.asarray(is_melanoma, bool)}
    )
    frame["sex"] = rows.sex.to_numpy()
    frame["age_band"] = age_band(rows.age_approx.reset_index(drop=True)).to_numpy()
    frame["anatom_site"] = rows.anatom_site.to_numpy()
    frame["source"] = rows.source.map(SOURCE_NAMES).fillna(rows.source).to_numpy()
    columns, estimated = [*COLUMNS], {}
    if tones is not None:
        angles, how = tones
        frame[SKIN_TONE] = ita_group(angles.reindex(rows.image_name).reset_index(drop=True)).to_numpy()
        columns.append(SKIN_TONE)
        estimated[SKIN_TONE] = f"ITA {how}, in the groups of Kinyanjui et al. (2020)"
    if FITZPATRICK in rows and rows[FITZPATRICK].notna().any():
        frame[FITZPATRICK] = rows[FITZPATRICK].to_numpy()
        columns.append(FITZPATRICK)
    return frame, columns, estimated


def check_columns(table: pd.DataFrame, extra: tuple[str, ...]) -> None:
    """Refuse --by columns the ingested table does not have (or that name every image apart)."""
    unknown = [c for c in extra if c not in table.columns or c in ("image_name", "image_path")]
    if unknown:
        raise ValueError(
            f"no column {', '.join(unknown)} in the data; columns: {', '.join(sorted(table.columns))}"
        )


def subgroups(
    run: Path,
    table: pd.DataFrame,
    extra: tuple[str, ...] = (),
    sensitivity: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    tones: tuple[pd.Series, str] | None = None,
) -> Subgroups:
    """The run's latest out-of-fold rows by subgroup; `table` is the run's ingested data (for
    the metadata); `tones`, each image's ITA (by image_name) and how it was estimated, adds the
    estimated skin-tone groups; a table with fitzpatrick_skin_type adds its groups. Saved in the run
    (RUN/subgroups.json) and returned."""
    run = Path(run)
    opened = Run(run)
    cfg, oof = opened.settings, opened.latest_oof()
    check_columns(table, extra)
    meta = table.drop_duplicates("image_name").set_index("image_name")
    missing = ~oof.image_name.isin(meta.index)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} out-of-fold image(s) of {run} are not in this data, e.g. "
            f"{', '.join(oof.image_name[missing].head(5))}: is it the run's data?"
        )
    mel = melanoma_index(cfg.scheme)
    rows = meta.loc[oof.image_name].reset_index()
    score = oof[class_names(cfg.scheme)[mel]].to_numpy(np.float64)
    frame, columns, estimated = group_frame(rows, score, (oof.target == mel).to_numpy(), tones)
    for column in extra:
        frame[column] = rows[column].to_numpy()
    threshold = threshold_at(frame.score, frame.is_melanoma, sensitivity)
    result = subgroup_table(frame, (*columns, *extra), threshold, n_boot, seed)
    gaps = equity_gaps(frame, result, threshold, n_boot, seed)
    bootstrap = {"resamples": n_boot, "seed": seed, "level": 0.95}
    saved = Subgroups(opened.latest_oof_name, sensitivity, threshold, MIN_EACH, bootstrap,
                      result.replace({np.nan: None}).to_dict(orient="records"), gaps, estimated)  # fmt: skip
    saved.save(run)
    return saved
