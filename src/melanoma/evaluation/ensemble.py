"""Ensembles by rank averaging, chosen on cross-validation rather than the leaderboard.

Each member's test scores become percentile ranks (0..1], which are averaged with optional
weights (the winners: 18 models, equal weights). When the members have out-of-fold predictions,
the ensemble's out-of-fold AUC is computed the same way, with ranks taken within folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from melanoma.evaluation.predict import score_problems
from melanoma.metrics import melanoma_auc, rank_within
from melanoma.run import Run
from melanoma.rundir import SUBMISSION
from melanoma.targets import class_names, melanoma_index


def percentile_ranks(score: np.ndarray) -> np.ndarray:
    """Ranks divided by the count: (0, 1], ties share their average rank."""
    return rankdata(np.asarray(score, dtype=float)) / len(score)


def _weights(weights: list[float] | None, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != n or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"expected {n} non-negative weights with a positive sum, got {list(w)}")
    return w / w.sum()


def rank_average(
    subs: list[pd.DataFrame], weights: list[float] | None = None, names: list[str] | None = None
) -> pd.DataFrame:
    """Weighted mean of the members' percentile ranks; every member must score the same images."""
    names = names or [f"member {i + 1}" for i in range(len(subs))]
    if not subs:
        raise ValueError("an ensemble needs at least one member")
    w = _weights(weights, len(subs))
    order = subs[0].image_name
    total = np.zeros(len(order))
    for sub, name, wi in zip(subs, names, w, strict=True):
        if set(sub.image_name) != set(order) or sub.image_name.duplicated().any():
            raise ValueError(f"{name}: scores other images than {names[0]} (or repeats some)")
        total += wi * percentile_ranks(sub.set_index("image_name").target.loc[order].to_numpy())
    return pd.DataFrame({"image_name": order.to_numpy(), "target": total})


def member_submission(path: Path) -> pd.DataFrame:
    """A member's test scores: a submission CSV, or a run directory's submission.csv."""
    path = Path(path)
    file = path / SUBMISSION if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found; run `melanoma predict {path}` first")
    sub = pd.read_csv(file, dtype={"image_name": str, "isic_id": str})
    header = "isic_id" if list(sub.columns) == ["isic_id", "target"] else "image_name"  # ISIC 2024's
    sub = sub.rename(columns={"isic_id": "image_name"})
    sub.attrs["header"] = header
    problems = score_problems(sub)  # one bad score would blank the whole rank average
    if problems:
        raise ValueError(f"{file}: not a usable ensemble member: " + "; ".join(problems))
    return sub


def member_oof(run: Path) -> pd.DataFrame | None:
    """A run's out-of-fold melanoma scores (image_name, fold, is_ext, is_melanoma, score): the
    newest evaluated file with TTA if there is one, else training's oof.csv; None for a CSV member."""
    run = Path(run)
    if not run.is_dir():
        return None
    try:
        opened = Run(run)
        oof = opened.latest_oof()
    except FileNotFoundError:
        return None
    scheme = opened.scheme
    mel = melanoma_index(scheme)
    return pd.DataFrame(
        {"image_name": oof.image_name, "fold": oof.fold, "is_ext": oof.is_ext, "is_melanoma": oof.target == mel,
         "score": oof[class_names(scheme)[mel]]}
    )  # fmt: skip


def oof_ensemble(
    oofs: list[pd.DataFrame], weights: list[float] | None = None, names: list[str] | None = None
) -> dict:
    """Out-of-fold AUC (all rows, 2020 rows) of the weighted rank average, ranks within folds;
    the members must cover the same images in the same folds."""
    names = names or [f"member {i + 1}" for i in range(len(oofs))]
    w = _weights(weights, len(oofs))
    base = oofs[0].set_index("image_name")
    total = np.zeros(len(base))
    for oof, name, wi in zip(oofs, names, w, strict=True):
        o = oof.set_index("image_name")
        if set(o.index) != set(base.index) or not (o.fold.loc[base.index] == base.fold).all():
            raise ValueError(
                f"{name}: out-of-fold rows or folds differ from {names[0]}'s; use the same folds"
            )
        total += wi * rank_within(o.score.loc[base.index].to_numpy(), base.fold.to_numpy())
    is_mel, old = base.is_melanoma.to_numpy(), (base.is_ext == 0).to_numpy()
    return {
        "auc": melanoma_auc(total, is_mel),
        "auc_20": melanoma_auc(total[old], is_mel[old]),
        "images": len(base),
    }


def ensemble(
    members: list[Path], weights: list[float] | None = None, out: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank-average the members' submissions (written to `out`) and score each member and the
    ensemble out of fold where every member has out-of-fold predictions. Returns the submission
    and a table of members (weight, OOF AUC, OOF AUC_20) plus the ensemble's row."""
    names = [str(m) for m in members]
    subs = [member_submission(m) for m in members]
    sub = rank_average(subs, weights, names)
    table = pd.DataFrame({"member": names, "weight": _weights(weights, len(members))})
    oofs = [member_oof(m) for m in members]
    if all(o is not None for o in oofs):
        singles = [oof_ensemble([o], names=[n]) for o, n in zip(oofs, names, strict=True)]
        table["oof_auc"] = [s["auc"] for s in singles]
        table["oof_auc_20"] = [s["auc_20"] for s in singles]
        both = oof_ensemble(oofs, weights, names)
        table.loc[len(table)] = {
            "member": "ensemble",
            "weight": 1.0,
            "oof_auc": both["auc"],
            "oof_auc_20": both["auc_20"],
        }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        sub.rename(columns={"image_name": subs[0].attrs["header"]}).to_csv(out, index=False)
        table.to_csv(Path(out).with_name(Path(out).stem + "_members.csv"), index=False)
    return sub, table
