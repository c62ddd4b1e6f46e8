"""One self-contained HTML report for a run, an ensemble or an ablation suite.

Everything is inline (CSS, PNG charts as data: URIs, no script), so the file can be mailed or
archived as it is. Every piece of text that comes from data or settings is HTML-escaped.

- a run: data summary (classes per source and per fold), training curves, ROC curves with AUC and
  bootstrap interval, per-fold table, the evaluations written by `melanoma evaluate`, the config;
- an ensemble (the CSV `melanoma ensemble` wrote): its members table, then each member run;
- a suite (a folder with suite.json): the ablation table and charts, then each variant's run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from melanoma import __version__, rundir
from melanoma.card import tree_model_words
from melanoma.evaluation.evaluate import per_fold
from melanoma.fileio import atomic_write
from melanoma.metrics import bootstrap_ci, melanoma_auc, partial_auc
from melanoma.plots import pyplot, save
from melanoma.results import MISSING, Calibration, Gallery, OperatingPoints, Saved, Subgroups, make_command
from melanoma.run import Run, is_trained
from melanoma.targets import class_names, melanoma_index, positive_words, source_names

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; } table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td { white-space: nowrap; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; }
.note { color: #666; font-size: 0.85rem; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.75rem; } figure { margin: 0; width: 330px; }
figcaption { font-size: 0.8rem; color: #444; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(
        index=False, escape=True, float_format=lambda v: f"{v:.{digits}f}", border=0, na_rep="-"
    )


def _png(fig: object, alt: str) -> str:
    buffer = io.BytesIO()
    save(fig, buffer)
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _curves(metrics: pd.DataFrame, with_auc_20: bool) -> str:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for fold, part in metrics.groupby("fold"):
        left.plot(part.epoch, part.train_loss, "--", marker=".", label=f"fold {fold} train")
        left.plot(part.epoch, part.val_loss, "-", marker=".", label=f"fold {fold} validation")
        right.plot(part.epoch, part.auc, "-", marker=".", label=f"fold {fold} AUC")
        if with_auc_20:
            right.plot(part.epoch, part.auc_20, ":", marker=".", label=f"fold {fold} AUC_20")
    left.set_title("Loss", fontsize=10)
    right.set_title("Validation AUC (all rows) and AUC_20 (2020 rows)" if with_auc_20 else "Validation AUC",
                    fontsize=10)  # fmt: skip
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        ax.legend(fontsize=7, ncol=2 if metrics.fold.nunique() > 3 else 1)
    return _png(fig, "training curves")


def _has_2019(oof: pd.DataFrame, scheme: str) -> bool:
    """Whether the out-of-fold rows mix ISIC 2019 into 2020 (only then is AUC_20 another figure)."""
    return scheme != "mb" and bool((oof.is_ext == 1).any()) and bool((oof.is_ext == 0).any())


def _roc(oof: pd.DataFrame, scheme: str, n_boot: int) -> tuple[str, pd.DataFrame]:
    plt = pyplot()
    melanoma = class_names(scheme)[melanoma_index(scheme)]
    word, plural = positive_words(scheme)
    is_mel = (oof.target == melanoma_index(scheme)).to_numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    rows = []
    subsets = [("all rows", np.ones(len(oof), bool))]
    if _has_2019(oof, scheme):
        subsets.append(("2020 rows", (oof.is_ext == 0).to_numpy()))
    for name, at in subsets:
        y, s = is_mel[at], oof[melanoma].to_numpy()[at]
        auc = melanoma_auc(s, y)
        if np.isnan(auc):
            continue
        low, high = bootstrap_ci(melanoma_auc, s, y, n_boot)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name}: AUC {auc:.4f} (95% {low:.4f}-{high:.4f})")
        row = {
            "rows": name,
            "images": int(at.sum()),
            plural: int(y.sum()),
            "auc": auc,
            "low": low,
            "high": high,
        }
        if scheme == "mb":  # ISIC 2024's own figure: the partial AUC above 80% sensitivity
            row["pauc_80"] = partial_auc(s, y)
        rows.append(row)
    ax.plot([0, 1], [0, 1], color="#bbb", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    rest = "benign" if scheme == "mb" else "rest"
    ax.set_title(f"Out-of-fold ROC ({word} vs {rest})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig, "ROC curves"), pd.DataFrame(rows)


def run_section(path: Path, n_boot: int = 500, level: int = 2) -> str:
    """The report of one run directory, as an HTML fragment."""
    run = Run(path)
    cfg, scheme = run.config, run.scheme
    h, sub = f"h{level}", f"h{level + 1}"
    parts = [f"<{h}>Run {_e(run.name)}</{h}>", f'<p class="note">{_e(_describe(cfg, scheme))}</p>']
    oof = run.latest_oof()
    names = class_names(scheme)
    oof_named = oof.assign(source=source_names(oof.is_ext, scheme, run.data_sources),
                           diagnosis=[names[t] for t in oof.target])  # fmt: skip
    parts.append(f"<{sub}>Data (out-of-fold rows): classes per source and per fold</{sub}>")
    for by in ("source", "fold"):
        counts = pd.crosstab(oof_named[by], oof_named.diagnosis, margins=True, margins_name="all")
        parts.append(_table(counts.rename_axis(columns=None).reset_index(), 0))
    m = run.metrics()
    if m is not None:
        parts.append(f"<{sub}>Training curves</{sub}>" + _curves(m, _has_2019(oof, scheme)))
    chart, rocs = _roc(oof, scheme, n_boot)
    parts.append(f"<{sub}>ROC curves</{sub}>" + chart + _table(rocs))
    folds = per_fold(oof, scheme)
    if not _has_2019(oof, scheme):
        folds = folds.drop(columns="auc_20")  # the same figure as auc without ISIC 2019 rows
    if m is not None:
        best = m.sort_values("auc", ascending=False).groupby("fold").epoch.first()
        folds["best_epoch"] = folds.fold.map(best).astype("Int64")  # <NA>: a fold metrics.csv lacks
    parts.append(f"<{sub}>Per fold</{sub}>" + _table(folds))
    for result in run.evaluations():
        parts.append(f"<{sub}>{_e('Evaluation: ' + result.title())}</{sub}>" + _table(result.table(scheme)))
        if result.multiclass:
            parts.append(f'<p class="note">{_e(result.multiclass_text())} Rows: true class; columns: predicted.</p>'
                         + _table(result.confusion_table(), 0))  # fmt: skip
    parts += _clinical_sections(run, sub)
    parts.append(
        f"<details><summary>config.json</summary><pre>{_e(json.dumps(cfg, indent=2))}</pre></details>"
    )
    return "\n".join(parts)


def _describe(cfg: dict, scheme: str) -> str:
    """One line on what the run is: the network and its input, or the tree model and its features."""
    names = class_names(scheme)
    classes = " / ".join(names) if len(names) <= 4 else f"{len(names)} classes"
    if cfg.get("kind") == "gbdt":
        g = cfg.get("gbdt", {})
        runs = g.get("image_run") or []
        stacked = f", stacked on {', '.join(runs)}" if runs else ""
        return (
            f"{tree_model_words(g)} (melanoma gbdt) on {len(cfg.get('features') or [])} features of the ISIC 2024 metadata{stacked}; "
            f"{classes} (scheme {scheme}); {g.get('n_estimators')} trees per fold; folds {cfg.get('folds')} by {g.get('fold_method')}"
        )
    return (
        f"{cfg.get('backbone')}, input {cfg.get('image_size')} px, {classes} (scheme {scheme}), "
        f"folds {cfg.get('folds')}, preset {cfg.get('preset') or '-'}"
    )


def _missing(command: str) -> str:
    return f'<p class="note">{MISSING}: <code>{_e(command)}</code></p>'


def _image_file(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _result(title: str, kind: type[Saved], result: Saved | None, run: Run, sub: str) -> list[str]:
    """One saved result's section: its sentence and its table (the ones the terminal and the card
    show), or the command that computes it."""
    if result is None:
        return [f"<{sub}>{title}</{sub}>", _missing(make_command(kind, run.path))]
    return [
        f"<{sub}>{title}</{sub}>",
        f'<p class="note">{_e(result.summary(run.scheme))}</p>' + _table(result.table(run.scheme)),
    ]


def _clinical_sections(run: Run, sub: str) -> list[str]:
    """Calibration, operating points, subgroups, explanations (a tree run: its feature
    importances) and the model card of a run, from the results their commands saved (with the
    command to run where one is missing)."""
    path = run.path
    fit = run.calibration()
    parts = _result("Calibration", Calibration, fit, run, sub)
    if fit is not None and (path / rundir.CALIBRATION_PNG).is_file():
        parts.append(_image_file(path / rundir.CALIBRATION_PNG, "reliability diagram"))
    parts += _result("Operating points", OperatingPoints, run.operating_points(), run, sub)
    groups = run.subgroups()
    parts += _result("Subgroups", Subgroups, groups, run, sub)
    if groups is not None and groups.gaps:
        parts.append('<p class="note">Equity gaps: largest minus smallest across each column\'s scored groups, '
                     "95% bootstrap intervals.</p>" + _table(groups.gap_table()))  # fmt: skip
    return parts + _explanations(run, sub) + _validation_sections(run, sub) + _card_section(run, sub)


def _explanations(run: Run, sub: str) -> list[str]:
    """The Grad-CAM gallery of an image run, or what a tree run's trees used."""
    path = run.path
    if run.is_tree:  # no image to explain: what the trees used
        importance = run.feature_importance()
        return [f"<{sub}>Feature importances (gain, mean over the folds)</{sub}>",
                _missing(f"melanoma gbdt DATA --out {path}") if importance is None else _table(importance.head(20))]  # fmt: skip
    parts = [f"<{sub}>Explanations: confident misses and false alarms</{sub}>"]
    gallery = run.gallery()
    if gallery is None:
        return [*parts, _missing(make_command(Gallery, path))]
    cells = []
    for caption, file in gallery.captions(run.scheme):
        if (path / file).is_file():
            cells.append(
                f"<figure>{_image_file(path / file, caption)}<figcaption>{_e(caption)}</figcaption></figure>"
            )
        else:
            cells.append(f'<p class="note">{_e(caption)}: {_e(file)} is missing</p>')
    parts.append(
        f'<p class="note">{_e(gallery.summary(run.scheme))}</p><div class="gallery">{"".join(cells)}</div>'
    )
    return parts


def _validation_sections(run: Run, sub: str) -> list[str]:
    """Each external validation of the run: its sentence, its table, its subgroups and equity gaps."""
    parts = []
    for result in run.validations():
        groups = result.groups()
        parts += [f"<{sub}>{_e('External validation: ' + result.name)}</{sub}>",
                  f'<p class="note">{_e(result.summary(run.scheme))}</p>' + _table(result.table(run.scheme)),
                  f'<p class="note">{_e("Subgroups: " + groups.summary())}</p>' + _table(groups.table(run.scheme))]  # fmt: skip
        if result.gaps:
            parts.append(_table(groups.gap_table()))
        parts += _flagged_images(result.input_checks.get("flagged_images", []))
    return parts


SHOWN_FLAGGED = 24  # thumbnails per validation


def _thumbnail(path: str, side: int = 96) -> str:
    """An image as a small inline JPEG (or a note when it cannot be read any more)."""
    import io

    from melanoma.inputs.decode import ImageError, decode

    try:
        image = decode(path, at_least=side)
    except (ImageError, OSError) as err:
        return f"<span class='note'>{_e(str(err))}</span>"
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return f'<img alt="{_e(Path(path).name)}" src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _flagged_images(flagged: list[dict]) -> list[str]:
    """The images the input checks flagged, with thumbnails (the first SHOWN_FLAGGED)."""
    if not flagged:
        return []
    cells = []
    for item in flagged[:SHOWN_FLAGGED]:
        why = "; ".join([*([item["quality"]] if item["quality"] else []),
                         *([f"OOD score {item['ood_distance']:.2f}"] if item.get("ood_distance") else [])])  # fmt: skip
        cells.append(f"<figure style=\"width: 120px\">{_thumbnail(item['image_path'])}<figcaption>{_e(item['image_name'])}: "
                     f"{_e(why or 'flagged')}</figcaption></figure>")  # fmt: skip
    more = f" (the first {SHOWN_FLAGGED} of {len(flagged)})" if len(flagged) > SHOWN_FLAGGED else ""
    return [
        f'<p class="note">Flagged by the input checks{more}:</p><div class="gallery">{"".join(cells)}</div>'
    ]


def _card_section(run: Run, sub: str) -> list[str]:
    card = run.model_card()
    if card is None:
        return [f"<{sub}>Model card</{sub}>", _missing(f"melanoma card {run.path}")]
    return [f"<{sub}>Model card</{sub}>",
            f"<details><summary>{_e(rundir.MODEL_CARD)}</summary><pre>{_e(card)}</pre></details>"]  # fmt: skip


def summary_section(headline: str, table: pd.DataFrame, note: str = "") -> str:
    """The top of a page that compares models: the headline in one sentence, the table behind it."""
    parts = ["<h2>Summary</h2>", f"<p><strong>{_e(headline)}</strong></p>", _table(table)]
    return "\n".join(parts + ([f'<p class="note">{_e(note)}</p>'] if note else []))


def suite_section(out: Path, n_boot: int = 500) -> str:
    """The report of an ablation suite folder."""
    from melanoma.experiments.ablate import saved_suite, summarize

    suite = saved_suite(out)
    per, table, paths = summarize(suite, out)
    parts = [f"<h2>Ablation suite {_e(suite.name)}</h2>",
             f'<p class="note">folds {_e(suite.folds)}; differences are paired over folds (t-test, p &lt; 0.05 = real)</p>',
             _table(table), "<h3>Per fold</h3>", _table(per)]  # fmt: skip
    parts += [_image_file(p, p.stem) for p in paths]
    for variant in suite.names():
        if is_trained(Path(out) / variant):
            parts.append(run_section(Path(out) / variant, n_boot, level=3))
    return "\n".join(parts)


def ensemble_section(path: Path, n_boot: int = 500, include_members: bool = True) -> str:
    """The report of an ensemble CSV written by `melanoma ensemble` (with its _members.csv)."""
    members = pd.read_csv(Path(path).with_name(Path(path).stem + "_members.csv"))
    parts = [f"<h2>Ensemble {_e(Path(path).name)}</h2>",
             '<p class="note">rank average of the members\' test scores; out-of-fold AUC with ranks within folds</p>',
             _table(members)]  # fmt: skip
    for m in members.member if include_members else []:
        if m != "ensemble" and Path(m).is_dir():
            parts.append(run_section(Path(m), n_boot, level=3))
    return "\n".join(parts)


def report(path: Path, out: Path | None = None, n_boot: int = 500) -> Path:
    """Write the report of a run directory, a suite folder or an ensemble CSV; returns its path
    (default PATH/report.html, or next to the ensemble CSV)."""
    from melanoma.experiments.ablate import is_suite_folder

    path = Path(path)
    if path.is_dir() and is_suite_folder(path):
        body, title = suite_section(path, n_boot), f"Ablation suite {path.name}"
    elif path.is_dir() and (path / rundir.CONFIG).is_file():
        body, title = run_section(path, n_boot), f"Run {path.name}"
    elif path.is_file() and path.with_name(path.stem + "_members.csv").is_file():
        body, title = ensemble_section(path, n_boot), f"Ensemble {path.name}"
    else:
        raise ValueError(f"{path}: not a run directory, an ablation suite folder or an ensemble CSV")
    target = Path(out) if out else (path / "report.html" if path.is_dir() else path.with_suffix(".html"))
    return write_page(title, body, target)


def write_page(title: str, body: str, target: Path) -> Path:
    """A complete HTML page around report sections."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
        f'<p class="note">melanoma {_e(__version__)}, {stamp}</p>\n{body}\n</body></html>\n'
    )
    return atomic_write(Path(target), lambda tmp: tmp.write_text(page, encoding="utf-8"))
