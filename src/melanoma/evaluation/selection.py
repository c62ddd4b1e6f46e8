"""Screening ensemble members for models that will not generalise (ideas of the 11th-place team).

Two signals per candidate, both comparing its out-of-fold (train) predictions with its test
predictions:

- correlation-matrix divergence: the correlation matrix of its class probabilities on the OOF
  rows minus the same on the test rows; the largest absolute entry. A model whose classes relate
  differently on test than in training has learnt something that does not carry over.
- adversarial-validation importance: a random forest fed every candidate's class probabilities
  learns to tell train rows from test rows (cross-validated); a candidate's importance is the drop
  in that classifier's AUC when its columns are shuffled together. A candidate that carries a
  train/test signal stands out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from melanoma.run import Run
from melanoma.targets import class_names

MAX_DIVERGENCE = 0.1
MAX_IMPORTANCE = 0.02


@dataclass
class Candidate:
    """A model's class probabilities on the OOF rows and on the test rows (same columns)."""

    name: str
    oof: pd.DataFrame
    test: pd.DataFrame


def correlation_divergence(oof: pd.DataFrame, test: pd.DataFrame) -> float:
    """Largest absolute difference between the class-probability correlation matrices on OOF
    and on test rows (0 when they agree; up to 2)."""
    a = np.nan_to_num(np.corrcoef(oof.to_numpy(dtype=float), rowvar=False))
    b = np.nan_to_num(np.corrcoef(test.to_numpy(dtype=float), rowvar=False))
    return float(np.abs(a - b).max())


def adversarial_importance(
    candidates: list[Candidate], folds: int = 5, seed: int = 0, max_rows: int = 20000
) -> tuple[float, np.ndarray]:
    """Cross-validated AUC of a forest telling test rows from train rows using every candidate's
    probabilities, and each candidate's importance (mean AUC drop when its columns are shuffled)."""
    x_train = np.hstack([c.oof.to_numpy(dtype=float) for c in candidates])
    x_test = np.hstack([c.test.to_numpy(dtype=float) for c in candidates])
    x = np.vstack([x_train, x_test])
    y = np.r_[np.zeros(len(x_train)), np.ones(len(x_test))]
    rng = np.random.default_rng(seed)
    if len(x) > max_rows:  # enough to see a signal, bounded time
        keep = rng.choice(len(x), max_rows, replace=False)
        x, y = x[keep], y[keep]
    spans, start = [], 0
    for c in candidates:
        spans.append((start, start + c.oof.shape[1]))
        start += c.oof.shape[1]
    scores, drops = np.zeros(len(y)), np.zeros((folds, len(candidates)))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for f, (fit, held) in enumerate(split.split(x, y)):
        forest = RandomForestClassifier(200, min_samples_leaf=5, n_jobs=-1, random_state=seed)
        forest.fit(x[fit], y[fit])
        scores[held] = forest.predict_proba(x[held])[:, 1]
        base = roc_auc_score(y[held], scores[held])
        for i, (a, b) in enumerate(spans):
            shuffled = x[held].copy()
            shuffled[:, a:b] = shuffled[rng.permutation(len(held)), a:b]  # the candidate's columns together
            drops[f, i] = base - roc_auc_score(y[held], forest.predict_proba(shuffled)[:, 1])
    return float(roc_auc_score(y, scores)), drops.mean(0)


def screen(
    candidates: list[Candidate],
    max_divergence: float = MAX_DIVERGENCE,
    max_importance: float = MAX_IMPORTANCE,
    seed: int = 0,
) -> tuple[pd.DataFrame, float]:
    """A table (candidate, divergence, importance, flagged, why) and the adversarial AUC."""
    for c in candidates:
        if list(c.oof.columns) != list(c.test.columns):
            raise ValueError(f"{c.name}: OOF and test probabilities have different columns")
    adv_auc, importance = adversarial_importance(candidates, seed=seed)
    rows = []
    for c, imp in zip(candidates, importance, strict=True):
        div = correlation_divergence(c.oof, c.test)
        why = [f"divergence {div:.3f} > {max_divergence}"] if div > max_divergence else []
        why += [f"importance {imp:.3f} > {max_importance}"] if imp > max_importance else []
        rows.append(
            {
                "candidate": c.name,
                "divergence": div,
                "importance": float(imp),
                "flagged": bool(why),
                "why": "; ".join(why),
            }
        )
    return pd.DataFrame(rows), adv_auc


def run_candidate(run: Path) -> Candidate:
    """A run's OOF class probabilities (evaluated with TTA if available, else training's) and test
    class probabilities from single fold models like the OOF ones (test row i from fold model
    i mod k; RUN/test_probs_by_fold.csv, written by `melanoma predict`). Fold-averaged test
    predictions would be smoother than any single model's and give every candidate away."""
    opened = Run(run)
    names = class_names(opened.scheme)
    oof = opened.latest_oof()
    by_fold = opened.test_probs_by_fold()
    folds = sorted(by_fold.fold.unique())
    images = by_fold.image_name.drop_duplicates().reset_index(drop=True)
    pick = pd.DataFrame({"image_name": images, "fold": [folds[i % len(folds)] for i in range(len(images))]})
    test = pick.merge(by_fold, on=["image_name", "fold"], how="left")
    return Candidate(str(run), oof[names], test[names])


def plot(
    table: pd.DataFrame, adv_auc: float, max_divergence: float, max_importance: float, path: Path
) -> Path:
    """Two horizontal bar charts, divergence and importance per candidate, each with its limit
    dashed: a candidate over that chart's limit in red, one flagged by the other chart only in
    orange, the rest blue, as the legend says; candidates named by the shortest path ends that
    tell them apart."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from melanoma.plots import COLOURS, pyplot, save

    plt = pyplot()
    labels = short_names(list(table.candidate))
    fig, axes = plt.subplots(
        1, 2, figsize=(9.5, 1.6 + 0.38 * len(table)), sharey=True, constrained_layout=True
    )
    for ax, column, limit, title in [
        (axes[0], "divergence", max_divergence, "Correlation divergence,\nout-of-fold against test"),
        (
            axes[1],
            "importance",
            max_importance,
            f"Adversarial importance\n(train against test AUC {adv_auc:.3f})",
        ),
    ]:
        over = table[column].to_numpy() > limit
        colours = [COLOURS["over"] if o else COLOURS["flagged_elsewhere"] if f else COLOURS["kept"]
                   for o, f in zip(over, table.flagged, strict=True)]  # fmt: skip
        ax.barh(labels, table[column], color=colours)
        ax.axvline(limit, color="black", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0].invert_yaxis()  # the table's order, top to bottom
    legend = [Patch(color=COLOURS["over"], label="over this chart's limit (flagged)"),
              Patch(color=COLOURS["flagged_elsewhere"], label="flagged by the other chart"),
              Patch(color=COLOURS["kept"], label="under both limits"),
              Line2D([], [], color="black", linestyle="--", linewidth=1, label="limit")]  # fmt: skip
    fig.legend(handles=legend, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    save(fig, path, dpi=110)
    return Path(path)


def short_names(paths: list[str]) -> list[str]:
    """Each name by the fewest trailing path parts that tell it from every other (runs/a/b3 and
    runs/c/b3 become a/b3 and c/b3; a folder name no other shares stays alone)."""
    parts = [Path(p).parts or (p,) for p in paths]
    names = []
    for i, q in enumerate(parts):
        others = [r for j, r in enumerate(parts) if j != i]
        n = next((n for n in range(1, len(q) + 1) if all(q[-n:] != r[-n:] for r in others)), len(q))
        names.append("/".join(q[-n:]))
    return names
