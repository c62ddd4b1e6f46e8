"""Ablation suites: which choices matter, with the fold-to-fold noise that says which differences are real.

A suite is a baseline (a preset and/or settings) and named variants (settings changed from the
baseline), trained over the same folds. Each variant x fold is a unit: an independent, resumable
`melanoma train` of one fold into OUT/<variant>/ that any scheduler can run (`melanoma ablate
units` prints the commands); finished units are skipped. The results: per-fold best AUC and
AUC_20, their mean and standard deviation, and a paired comparison with the baseline across folds
(a paired t-test: is the difference larger than the folds' own noise?), with two bar charts
(helped / did not help), as the reproduction presented them (docs/ablations.md).

A suite file is TOML:

    name = "my-suite"
    folds = [0, 1, 2]
    [baseline]
    preset = "baseline"
    epochs = 10
    [variants.no-pretraining]
    pretrained = false
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from melanoma.config import TrainConfig, config_fields, resolve, setting_name
from melanoma.run import Run, is_run
from melanoma.rundir import fold_epochs_done

BASELINE = "baseline"
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # a variant's folder name


@dataclass
class Suite:
    """A baseline and its variants over some folds."""

    name: str
    baseline: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    folds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if not SAFE_NAME.fullmatch(str(v))]
        if bad:  # a variant is a folder under --out: "../x" or "a/b" would write elsewhere
            raise ValueError(
                f"suite {self.name!r}: variant names become folders under --out and may hold only letters, "
                f"digits and . _ - (not starting with . or -): {', '.join(map(repr, bad))}"
            )
        if BASELINE in self.variants:
            raise ValueError(f"suite {self.name!r}: a variant may not be called {BASELINE!r}")
        # a key may be written as the train option is (workers, image-size, meta) or as the setting
        self.baseline = {setting_name(k): v for k, v in self.baseline.items()}
        self.variants = {n: {setting_name(k): v for k, v in s.items()} for n, s in self.variants.items()}
        known = config_fields() | {"preset"}
        for name, settings in [(BASELINE, self.baseline), *self.variants.items()]:
            unknown = sorted(set(settings) - known)
            if unknown:
                raise ValueError(f"suite {self.name!r}, {name}: unknown settings {', '.join(unknown)}")
            if "folds" in settings or "out" in settings:
                raise ValueError(
                    f"suite {self.name!r}, {name}: folds and out belong to the suite, not a variant"
                )
        if not self.folds:
            raise ValueError(f"suite {self.name!r}: no folds")

    def names(self) -> list[str]:
        """The baseline first, then the variants in order."""
        return [BASELINE, *self.variants]

    def config(self, variant: str, out: Path, fold: int) -> TrainConfig:
        """The training config of one unit."""
        if variant != BASELINE and variant not in self.variants:
            raise ValueError(
                f"suite {self.name!r} has no variant {variant!r}; it has {', '.join(self.names())}"
            )
        settings = {**self.baseline, **(self.variants.get(variant, {}))}
        preset = settings.pop("preset", None)
        return resolve(preset, {**settings, "out": str(Path(out) / variant), "folds": [fold]})


# The reproduction's list (docs/ablations.md), on its baseline preset.
REPRODUCTION = Suite(
    name="reproduction",
    baseline={"preset": "baseline"},
    variants={
        "no-pretraining": {"pretrained": False},
        "no-augmentation": {"augment": False},
        "no-external-data": {"external": False},
        "no-warmup": {"warmup": False},
        "no-cosine": {"cosine": False},
        "noisy-student": {"backbone": "tf_efficientnet_b3.ns_jft_in1k"},
        "effnet-b2": {"backbone": "efficientnet_b2"},
        "lr-1.5e-5": {"lr": 1.5e-5},
        "lr-2e-5": {"lr": 2e-5},
        "metadata": {"use_meta": True},
        "dropout-layers-1": {"n_dropout": 1},
        "dropout-layers-3": {"n_dropout": 3},
        "img-size-448": {"image_size": 448},
        "binary-labels": {"scheme": "2c"},
        "tensorflow-impl": {"backbone": "tf_efficientnet_b3.in1k"},
        "amp": {"amp": "bf16"},
    },
)
BUILTIN = {"reproduction": REPRODUCTION}


def load_suite(spec: str | Path) -> Suite:
    """A built-in suite by name, or a suite file (TOML)."""
    if str(spec) in BUILTIN:
        return BUILTIN[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{spec}: neither a built-in suite ({', '.join(BUILTIN)}) nor a suite file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
    extra = sorted(set(raw) - {"name", "folds", "baseline", "variants"})
    if extra:
        raise ValueError(f"{path}: unknown keys {', '.join(extra)}; expected name, folds, baseline, variants")
    if not isinstance(raw.get("variants", {}), dict) or not raw.get("variants"):
        raise ValueError(f"{path}: no [variants.<name>] tables")
    return Suite(
        raw.get("name", path.stem), raw.get("baseline", {}), raw["variants"], raw.get("folds", [0, 1, 2])
    )


def suite_toml(suite: Suite) -> str:
    """A suite as a suite file (TOML) that load_suite reads back the same: a built-in suite to copy,
    shrink (fewer variants or folds, fewer epochs) and run as a file."""
    import tomli_w

    return tomli_w.dumps({"name": suite.name, "folds": list(suite.folds), "baseline": suite.baseline,
                          "variants": suite.variants})  # fmt: skip


def shrink(
    suite: Suite, variants: list[str] | None = None, folds: list[int] | None = None, epochs: int | None = None
) -> Suite:
    """The suite with only these variants (the baseline stays), these folds, and this many epochs."""
    unknown = [v for v in variants or [] if v not in suite.variants]
    if unknown:
        raise ValueError(
            f"suite {suite.name!r} has no variant {', '.join(unknown)}; it has {', '.join(suite.variants)}"
        )
    kept = {v: s for v, s in suite.variants.items() if not variants or v in variants}
    baseline = {**suite.baseline, **({"epochs": epochs} if epochs else {})}
    return Suite(suite.name, baseline, kept, list(folds) if folds else list(suite.folds))


SUITE_FILE = "suite.json"  # in a suite's --out: which suite its units belong to


def is_suite_folder(out: Path) -> bool:
    return (Path(out) / SUITE_FILE).is_file()


def saved_suite(out: Path) -> Suite:
    """The suite whose units a folder holds (OUT/suite.json), or one clear error."""
    path = Path(out) / SUITE_FILE
    if not path.is_file():
        raise ValueError(f"{path}: not found; run `melanoma ablate run` first")
    try:
        return Suite(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a suite ({err}); run `melanoma ablate run` again") from err


def save_suite(suite: Suite, out: Path) -> None:
    """OUT/suite.json: what the units belong to; a different suite in the same folder is refused."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUITE_FILE
    fresh = json.loads(json.dumps(asdict(suite)))
    if path.is_file() and json.loads(path.read_text()) != fresh:
        raise ValueError(f"{out} holds another suite; choose another --out")
    path.write_text(json.dumps(fresh, indent=2) + "\n")


def units(suite: Suite) -> list[tuple[str, int]]:
    """Every (variant, fold) of the suite, baseline first."""
    return [(v, k) for v in suite.names() for k in suite.folds]


def unit_done(suite: Suite, out: Path, variant: str, fold: int) -> bool:
    """Whether a unit has trained all its epochs."""
    done = fold_epochs_done(Path(out) / variant, fold)
    return done is not None and done[0] >= suite.config(variant, out, fold).epochs


def unit_commands(
    suite_spec: str, suite: Suite, data: Path, out: Path, extra: list[str] | None = None
) -> list[str]:
    """One shell command per unit not yet finished, for any scheduler: this interpreter, absolute
    paths (a task may start elsewhere), a suite file by its absolute path."""
    from melanoma.experiments.slurm import launcher

    tail = " ".join(shlex.quote(a) for a in (extra or []))
    spec = str(Path(suite_spec).absolute()) if Path(suite_spec).is_file() else str(suite_spec)
    data, out = Path(data).absolute(), Path(out).absolute()
    return [
        f"{launcher()} ablate run {shlex.quote(spec)} --data {shlex.quote(str(data))} "
        f"--out {shlex.quote(str(out))} --variant {shlex.quote(v)} --fold {k}" + (f" {tail}" if tail else "")
        for v, k in units(suite)
        if not unit_done(suite, out, v, k)
    ]


def results(suite: Suite, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-fold best AUC and AUC_20 of every finished unit, and per variant: mean, standard
    deviation and the paired comparison with the baseline over the folds both finished."""
    rows = []
    for variant in suite.names():
        metrics = Run(Path(out) / variant).metrics() if is_run(Path(out) / variant) else None
        if metrics is None:
            continue
        for fold, part in metrics.groupby("fold"):
            if fold in suite.folds and unit_done(suite, out, variant, int(fold)):
                rows.append(
                    {
                        "variant": variant,
                        "fold": int(fold),
                        "auc": part.auc.max(),
                        "auc_20": part.auc_20.max(),
                    }
                )
    per_fold = pd.DataFrame(rows, columns=["variant", "fold", "auc", "auc_20"])
    return per_fold, compare(per_fold)


def compare(per_fold: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Mean and standard deviation per variant, and for each variant the paired differences from
    the baseline on common folds: mean difference, paired t-test p-value, and whether the
    difference is larger than the fold-to-fold noise (p < alpha; needs 2 or more folds)."""
    out = []
    base = per_fold[per_fold.variant == BASELINE].set_index("fold")
    for variant, part in per_fold.groupby("variant", sort=False):
        row: dict[str, Any] = {"variant": variant, "folds": len(part)}
        for metric in ("auc", "auc_20"):
            row[f"{metric}_mean"] = part[metric].mean()
            row[f"{metric}_std"] = part[metric].std(ddof=1) if len(part) > 1 else float("nan")
            common = part.set_index("fold").index.intersection(base.index)
            if variant == BASELINE or len(common) == 0:
                row[f"{metric}_diff"], row[f"{metric}_p"], row[f"{metric}_real"] = 0.0, float("nan"), False
                continue
            diff = part.set_index("fold").loc[common, metric] - base.loc[common, metric]
            p = float("nan")
            if len(common) > 1 and diff.std(ddof=1) > 0:
                p = float(
                    stats.ttest_rel(
                        part.set_index("fold").loc[common, metric], base.loc[common, metric]
                    ).pvalue
                )
            elif len(common) > 1 and diff.abs().sum() > 0:
                p = 0.0  # the same non-zero difference on every fold
            row[f"{metric}_diff"] = float(diff.mean())
            row[f"{metric}_p"] = p
            row[f"{metric}_real"] = bool(p < alpha) if not np.isnan(p) else False
        out.append(row)
    order = {BASELINE: 0}
    table = pd.DataFrame(out)
    if len(table):
        table = table.sort_values("variant", key=lambda s: s.map(lambda v: order.get(v, 1)), kind="stable")
    return table.reset_index(drop=True)


HEADINGS = {
    "helped": "Variants that helped (mean AUC difference from the baseline above 0)",
    "not_helped": "Variants that did not help (mean AUC difference from the baseline 0 or below)",
}


def charts(table: pd.DataFrame, out: Path) -> list[Path]:
    """ablation_helped.png and ablation_not_helped.png: one horizontal bar per run (AUC mean, error
    bar one standard deviation over folds), the baseline (grey) on top of both; a variant whose
    difference from it is real (paired over folds) dark blue, one within the noise light blue, as
    the legend says. AUC_20 gets its own panel only where it differs from AUC (ISIC 2019 rows in
    the folds). A chart with no variant to show is not drawn (an old one is removed)."""
    from matplotlib.patches import Patch

    from melanoma.plots import COLOURS, pyplot, save

    plt = pyplot()
    base = table[table.variant == BASELINE]
    others = table[table.variant != BASELINE]
    both = not np.allclose(table.auc_mean, table.auc_20_mean, equal_nan=True)
    metrics = [("auc", "AUC, all rows"), ("auc_20", "AUC_20, ISIC 2020 rows")] if both else [("auc", "AUC")]
    paths = []
    for name, part in [("helped", others[others.auc_diff > 0]), ("not_helped", others[others.auc_diff <= 0])]:
        path = Path(out) / f"ablation_{name}.png"
        if part.empty:
            path.unlink(missing_ok=True)
            continue
        shown = pd.concat([base, part])
        size = (
            3.2 + 3.3 * len(metrics),
            1.5 + 0.38 * len(shown),
        )  # at most 1,078 px wide: a report page's width
        fig, axes = plt.subplots(
            1, len(metrics), figsize=size, sharey=True, constrained_layout=True, squeeze=False
        )
        for ax, (metric, title) in zip(axes[0], metrics, strict=True):
            colours = [COLOURS["baseline"] if v == BASELINE else COLOURS["real" if r else "not_real"]
                       for v, r in zip(shown.variant, shown[f"{metric}_real"], strict=True)]  # fmt: skip
            std = shown[f"{metric}_std"].fillna(0)
            ax.barh(list(shown.variant), shown[f"{metric}_mean"], xerr=std, color=colours, capsize=3)
            low, high = np.nanmin(shown[f"{metric}_mean"] - std), np.nanmax(shown[f"{metric}_mean"] + std)
            ax.set_xlim(max(0.0, low - 0.05), min(1.0, high + 0.03))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("mean over folds (line: 1 sd)", fontsize=8)
            ax.tick_params(labelsize=8)
        axes[0, 0].invert_yaxis()  # the baseline on top, then the table's order
        fig.suptitle(HEADINGS[name], fontsize=10)
        legend = [Patch(color=COLOURS["baseline"], label="baseline"),
                  Patch(color=COLOURS["real"], label="real difference (paired t-test p < 0.05)"),
                  Patch(color=COLOURS["not_real"], label="within the fold-to-fold noise")]  # fmt: skip
        fig.legend(handles=legend, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
        save(fig, path, dpi=110)
        paths.append(path)
    return paths


def run(
    suite: Suite,
    data: Path,
    out: Path,
    variant: str | None = None,
    fold: int | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[tuple[str, int]]:
    """Train the suite's units (or the one chosen by variant / fold) that are not finished,
    resuming stopped ones; `overrides` apply to every unit (e.g. epochs for a quick look).
    Returns the units trained."""
    from melanoma.progress import console
    from melanoma.training.train import train, training_table

    if overrides:
        suite = Suite(suite.name, {**suite.baseline, **overrides}, suite.variants, suite.folds)
    save_suite(suite, Path(out))
    chosen = [
        (v, k) for v, k in units(suite) if (variant is None or v == variant) and (fold is None or k == fold)
    ]
    if not chosen:
        raise ValueError(
            f"no unit {variant or '*'} / fold {fold if fold is not None else '*'} in suite {suite.name!r}"
        )
    tables: dict[tuple, pd.DataFrame] = {}
    trained = []
    for v, k in chosen:
        if unit_done(suite, out, v, k):
            console.print(f"ablate: {v} fold {k} finished earlier; skipped")
            continue
        cfg = suite.config(v, out, k)
        key = (cfg.data_size, cfg.scheme, cfg.fold_method)
        if key not in tables:
            tables[key] = training_table(data, cfg, progress)
        console.print(f"ablate: {v} fold {k}")
        train(tables[key], cfg, progress=progress, resume=True)
        trained.append((v, k))
    return trained


def summarize(suite: Suite, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Results of the finished units: OUT/ablation_per_fold.csv, OUT/ablation.csv and the charts."""
    per_fold, table = results(suite, out)
    per_fold.to_csv(Path(out) / "ablation_per_fold.csv", index=False)
    table.to_csv(Path(out) / "ablation.csv", index=False)
    paths = charts(table, out) if len(table) else []
    return per_fold, table, paths
