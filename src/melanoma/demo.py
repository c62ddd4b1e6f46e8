"""The demo: the whole pipeline on synthetic ISIC-like data, on a CPU, in a few minutes."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from melanoma.data.folder import DataFolder
from melanoma.data.folds import fold_summary, write_folds
from melanoma.data.ingest import summarize as summarize_data
from melanoma.evaluation.predict import predict_submission
from melanoma.progress import console
from melanoma.synthetic.generate import SynthConfig, generate

if TYPE_CHECKING:
    import pandas as pd


def default_cache() -> Path:
    """$MELANOMA_CACHE, else $XDG_CACHE_HOME/melanoma, else ~/.cache/melanoma."""
    if os.environ.get("MELANOMA_CACHE"):
        return Path(os.environ["MELANOMA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "melanoma"


def _cached(cache: Path, prefix: str, settings: dict, write: Callable[[Path], None], what: str) -> Path:
    """A dataset generated once per settings into CACHE/<prefix>-<hash>; later calls reuse it.
    `write(folder)` generates into a temporary folder, which gets the final name only when whole."""
    key = json.dumps(settings, sort_keys=True)
    folder = cache / f"{prefix}-{zlib.crc32(key.encode()):08x}"
    stamp = folder / "truth" / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        console.print(f"{what}: reusing {folder}")
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    (partial / "truth" / "settings.json").write_text(key)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)  # only a complete dataset ever carries the final name
    console.print(f"{what}: wrote {folder}")
    return folder


def synthetic_data(cache: Path, cfg: SynthConfig, progress: bool = True) -> Path:
    """Generate the synthetic dataset into the cache once; later calls reuse it."""
    write = lambda folder: generate(folder, cfg, progress=progress)  # noqa: E731
    return _cached(cache, f"synth-seed{cfg.seed}", asdict(cfg), write, "Synthetic data")


# The demo's models: ImageNet-pretrained Lite0 (built-in offline weights) against the same network
# from scratch, small enough for 2 CPU cores; trained as a two-variant ablation over 3 folds.
# Init LR 1e-4: epochs at 1e-4, 1e-3 (the peak, 10 x) and 5e-4 (train.lr_at).
DEMO_DATA_SIZE = 80  # prepared jpeg-*-80x80 folders
DEMO_SUITE = {
    "name": "demo",
    "baseline": {
        "preset": "demo", "backbone": "tf_efficientnet_lite0", "pretrained": True, "data_size": DEMO_DATA_SIZE,
        "image_size": 64, "epochs": 3, "batch_size": 64, "lr": 1e-4, "channels_last": True,
    },
    "variants": {"no-pretraining": {"pretrained": False}},
    "folds": [0, 1, 2],
}  # fmt: skip


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the ensemble's out-of-fold AUC."""

    data: Path
    run: Path  # the ablation suite folder: one run directory per model
    submission: Path  # the ensemble's
    report: Path
    auc: float
    auc_20: float


# The external sets the demo validates its pretrained run on: the same clinic again (another seed)
# and another clinic (synthetic/centre.py), 600 labelled images each at 8% melanoma.
DEMO_EXTERNAL = {
    "same-centre": {"centre": "same", "seed": 101},
    "shifted-centre": {"centre": "shifted", "seed": 102},
}
DEMO_EXTERNAL_IMAGES = 600


def external_sets(
    cache: Path, size: int, n_images: int = DEMO_EXTERNAL_IMAGES, progress: bool = True
) -> dict[str, Path]:
    """The demo's external sets (generated once into the cache), prepared at the run's data size."""
    from melanoma.data.prepare import prepare
    from melanoma.synthetic.centre import CentreConfig, generate_centre

    found = {}
    for name, settings in DEMO_EXTERNAL.items():
        cfg = CentreConfig(n_images=n_images, **settings)
        write = lambda folder, cfg=cfg: generate_centre(folder, cfg, progress=progress)  # noqa: E731
        found[name] = _cached(cache, f"external-{name}", asdict(cfg), write, f"External set ({name})")
        prepare(found[name], found[name], sizes=(size,), progress=progress)
    return found


def external(run: Path, sets: dict[str, Path], size: int, progress: bool = True) -> None:
    """Validate the pretrained run on each external set and say what held."""
    from melanoma.data.ingest import ingest
    from melanoma.evaluation.validate import validate

    for name, folder in sets.items():
        result = validate(run, folder, ingest(folder, size, verify="none", progress=False), name, n_boot=200,
                          progress=progress)  # fmt: skip
        auc = result.auc
        console.print(
            f"[bold]demo:[/] validated on {name}: AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f}) "
            f"against {result.oof['auc']:.3f} out of fold; flagged: {', '.join(result.flagged()) or 'none'}"
            f"{result.checks_text()}"
        )


def clinical(
    run: Path, table: pd.DataFrame, data: Path, progress: bool = True,
    external_data: tuple[dict[str, Path], int] | None = None,
) -> None:  # fmt: skip
    """The questions a model meets next, on the demo's pretrained run: calibration, operating
    points, subgroups, a Grad-CAM gallery, the external validations (`external_data`: the sets and
    the data size) and the model card (all shown in the report)."""
    from melanoma.card import write_card
    from melanoma.evaluation.calibration import calibrate
    from melanoma.evaluation.explain import gallery
    from melanoma.evaluation.operating_points import operating_points
    from melanoma.evaluation.predict import meta_matrix
    from melanoma.evaluation.subgroups import subgroups

    fit = calibrate(run)
    ops = operating_points(run, n_boot=200)
    from melanoma.data.skin_tone import skin_tones

    groups = subgroups(run, table, n_boot=200, tones=skin_tones(data, table, progress))
    gallery(run, table, meta_matrix(table, run), n=3, progress=progress)
    if external_data is not None:
        from melanoma.evaluation.ood import fit as fit_ood

        fit_ood(run, table, meta_matrix(table, run), progress=progress)  # the input checks' reference
        external(run, *external_data, progress=progress)
    card = write_card(run, data)
    point, flagged = ops.points[-1], groups.flagged()
    console.print(
        f"[bold]demo:[/] {run.name}: temperature {fit.temperature:.2f} (ECE {fit.before.ece:.3f} -> "
        f"{fit.after.ece:.3f}); at {point.target_sensitivity:.0%} sensitivity, specificity "
        f"{point.specificity:.3f}; subgroups below overall: {', '.join(flagged) or 'none'}; {card}"
    )


def run_demo(
    out: Path = Path("runs/demo"),
    cache: Path | None = None,
    synth: SynthConfig | None = None,
    train_overrides: dict | None = None,
    progress: bool = True,
    external_images: int = DEMO_EXTERNAL_IMAGES,
) -> DemoResult:
    """The whole system on synthetic data: generate, deduplicate, prepare, fold, train two models
    over 3 folds (an ablation: pretrained against scratch), predict with TTA, ensemble, the
    clinical questions on the pretrained run (calibration, operating points, subgroups, Grad-CAM,
    model card), its validation on two external sets (the same clinic, another clinic), report."""
    from melanoma.data.dedup import apply, find_duplicates
    from melanoma.data.prepare import prepare
    from melanoma.evaluation.ensemble import ensemble
    from melanoma.experiments.ablate import BASELINE, Suite, run, summarize
    from melanoma.report import ensemble_section, suite_section, summary_section, write_page

    data = synthetic_data(cache or default_cache(), synth or SynthConfig(), progress)
    step = "[bold]demo:[/]"
    console.print(
        f"{step} near-duplicates (all candidates accepted here; a person would review {data}/dedup/review.html)"
    )
    pairs = find_duplicates(data, progress=progress)
    groups_found = apply(data)
    console.print(
        f"{step} {len(pairs)} candidate pairs; {int((~groups_found.keep.astype(bool)).sum())} duplicate(s) leave training"
    )
    settings = {**DEMO_SUITE["baseline"], **(train_overrides or {})}
    size = settings.get("data_size", DEMO_DATA_SIZE)
    console.print(f"{step} centre-crop and resize to {size} px")
    prepare(data, data, sizes=(size,), progress=progress)
    table, _ = write_folds(data, "triple", 5, 0, size, progress)
    console.print(summarize_data(table))
    console.print(fold_summary(table).round(4).to_string(), markup=False)
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(DEMO_SUITE["name"], settings, DEMO_SUITE["variants"], DEMO_SUITE["folds"])
    run(suite, data, out, progress=progress)
    members = []
    for variant in suite.names():
        member = out / variant
        predict_submission(member, table, "best", tta=True, progress=progress)
        members.append(member)
    sub, scores = ensemble(members, out=out / "ensemble.csv")
    sets = external_sets(cache or default_cache(), size, external_images, progress)
    clinical(out / BASELINE, table, data, progress, external_data=(sets, size))
    _, results, _ = summarize(suite, out)
    row = scores[scores.member == "ensemble"].iloc[0] if "oof_auc" in scores else None
    auc = float(row.oof_auc) if row is not None else float("nan")
    auc_20 = float(row.oof_auc_20) if row is not None else float("nan")
    headline, summary = demo_summary(results, scores)
    page = write_page("Demo: pretrained against scratch, and their ensemble",
                      summary_section(headline, summary, "Out-of-fold over folds 0-2 of the synthetic data; "
                                      "p: paired t-test over the folds against the pretrained baseline.")
                      + ensemble_section(out / "ensemble.csv", include_members=False) + suite_section(out),
                      out / "report.html")  # fmt: skip
    console.print(
        results[["variant", "auc_mean", "auc_std", "auc_diff", "auc_p"]].round(4).to_string(index=False),
        markup=False,
    )
    console.print(
        f"[bold green]Ensemble out-of-fold AUC {auc:.4f} (2020 rows: {auc_20:.4f})[/]; "
        f"submission: {out / 'ensemble.csv'}; report: {page}"
    )
    return DemoResult(data, out, out / "ensemble.csv", page, auc, auc_20)


def demo_summary(results: pd.DataFrame, scores: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The demo's headline and the table behind it: each model's AUC over the folds (mean, sd,
    paired difference from the baseline and its p) and pooled out of fold, then the ensemble's."""
    import pandas as pd

    pooled = dict(zip(scores.member, scores.oof_auc, strict=True)) if "oof_auc" in scores else {}
    by_name = {Path(m).name: v for m, v in pooled.items() if m != "ensemble"}
    rows = [{"model": r.variant, "folds": int(r.folds), "auc_mean": r.auc_mean, "auc_sd": r.auc_std,
             "difference": r.auc_diff, "p": r.auc_p, "pooled_oof_auc": by_name.get(r.variant, float("nan"))}
            for r in results.itertuples()]  # fmt: skip
    rows.append({"model": "ensemble (rank average)", "pooled_oof_auc": pooled.get("ensemble", float("nan"))})
    table = pd.DataFrame(rows)
    base, other = table.iloc[0], table.iloc[1:-1]
    said = "; ".join(f"{o.model} {o.auc_mean:.3f} +- {o.auc_sd:.3f} (difference {o.difference:+.3f}, p = {o.p:.3f}: "
                     f"{'real' if o.p < 0.05 else 'within the noise'})" for o in other.itertuples())  # fmt: skip
    headline = (f"Ensemble out-of-fold AUC {table.pooled_oof_auc.iloc[-1]:.3f}; {base.model} {base.auc_mean:.3f} "
                f"+- {base.auc_sd:.3f} over {int(base.folds)} folds; {said}.")  # fmt: skip
    return headline, table


# The ISIC 2024 demo: synthetic total-body-photo crops (2% malignant, so that 3 folds each hold
# some), a small pretrained image model (offline Lite0 weights) trained on positives repeated and
# negatives drawn afresh each epoch, its out-of-fold scores stacked under LightGBM with the
# tabular and per-patient features, each scored by partial AUC above 80% sensitivity.
DEMO_2024_SYNTH = {"n_train": 3000, "n_test": 200, "malignant_rate": 0.02, "centres": 4, "seed": 0}
DEMO_2024_IMAGE = {
    "backbone": "tf_efficientnet_lite0", "pretrained": True, "image_size": 64, "epochs": 3, "batch_size": 64,
    "lr": 1e-4, "pos_oversample": 5, "neg_per_epoch": 800, "k_folds": 3, "channels_last": True,
}  # fmt: skip


# The top teams' tree ensemble: three libraries, 3 bags each on their samples, tuned presets,
# early stopping inside the training folds, the probabilities averaged; stacked like LightGBM.
DEMO_2024_ENSEMBLE = {
    "models": ["lightgbm", "xgboost", "catboost"], "bags": 3, "pos_rate": 0.003, "neg_rate": 0.01,
    "early_stopping": 50, "params": "tuned", "n_estimators": 400,
}  # fmt: skip


def synthetic_2024(cache: Path, settings: dict, progress: bool = True) -> Path:
    """Synthetic ISIC 2024 data in the cache, generated once per settings."""
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

    write = lambda folder: generate_2024(folder, Synth2024Config(**settings), progress=progress)  # noqa: E731
    return _cached(cache, "synth2024", settings, write, "Synthetic ISIC 2024 data")


def run_demo_2024(
    out: Path = Path("runs/demo2024"),
    cache: Path | None = None,
    image_overrides: dict | None = None,
    progress: bool = True,
    synth_overrides: dict | None = None,
) -> pd.DataFrame:
    """ISIC 2024 end to end on synthetic data: folds by patient, an image model, LightGBM on the
    tables alone and stacked on the image scores, the three-library ensemble stacked the same way,
    evaluation (pAUC, AUC, top-15 sensitivity with 95% intervals) and a report of the ensemble.
    Returns the comparison table."""
    import pandas as pd

    from melanoma.config import resolve
    from melanoma.data.ingest import ingest
    from melanoma.evaluation.evaluate import evaluate
    from melanoma.metrics import top_k_sensitivity
    from melanoma.report import run_section, summary_section, write_page
    from melanoma.run import Run
    from melanoma.tabular.gbdt import GbdtConfig, train_gbdt
    from melanoma.training.train import train, training_table

    step = "[bold]demo 2024:[/]"
    out = Path(out)
    data = synthetic_2024(cache or default_cache(), {**DEMO_2024_SYNTH, **(synth_overrides or {})}, progress)
    settings = {**DEMO_2024_IMAGE, **(image_overrides or {})}
    write_folds(data, "triple", settings["k_folds"], 0, None, progress)
    console.print(f"{step} folds by patient, stratified by target, in {DataFolder(data).folds}")
    image_run, tabular, stacked, blended = out / "image", out / "tabular", out / "stacked", out / "ensemble"
    cfg = resolve("isic2024", {**settings, "out": str(image_run)})
    table = training_table(data, cfg, progress)
    console.print(f"{step} image model {cfg.backbone} at {cfg.image_size} px, {cfg.k_folds} folds")
    train(table, cfg, progress, resume=True)  # a rerun of the demo keeps the folds it trained
    predict_submission(image_run, table, "best", tta=True, progress=progress)
    console.print(
        f"{step} LightGBM on the tables, then stacked on the image model's scores, then the ensemble"
    )
    train_gbdt(data, GbdtConfig(out=str(tabular)), progress)
    train_gbdt(data, GbdtConfig(out=str(stacked), image_run=str(image_run)), progress)
    train_gbdt(data, GbdtConfig(out=str(blended), image_run=str(image_run), **DEMO_2024_ENSEMBLE), progress)
    patients = ingest(data, verify="none", progress=False).set_index("image_name").patient_id
    rows = []
    for name, run in (("image model", image_run), ("LightGBM, tables", tabular), ("LightGBM, stacked", stacked),
                      ("tree ensemble, stacked", blended)):  # fmt: skip
        result = evaluate(run, None, tta=False, n_boot=500, progress=progress)
        scores = {r["metric"]: r for r in result.scores if r["rows"] == "all"}
        oof = Run(run).latest_oof()
        top15 = top_k_sensitivity(
            oof.malignant.to_numpy(), (oof.target == 1).to_numpy(), patients.loc[oof.image_name].to_numpy()
        )
        rows.append(
            {"model": name, "pauc_80": scores["pauc_80"]["value"], "pauc_low": scores["pauc_80"]["low"],
             "pauc_high": scores["pauc_80"]["high"], "auc": scores["auc"]["value"], "top15_sensitivity": top15,
             "run": str(run)}
        )  # fmt: skip
    table_out = pd.DataFrame(rows)
    table_out.to_csv(out / "summary.csv", index=False)
    best = table_out.loc[table_out.pauc_80.idxmax()]
    headline = (f"Best pAUC above 80% sensitivity: {best.model}, {best.pauc_80:.3f} "
                f"(95% interval {best.pauc_low:.3f}-{best.pauc_high:.3f}); random scores give about 0.02.")  # fmt: skip
    note = "Out-of-fold over 3 patient-grouped folds of the synthetic 2024 data; 500 bootstrap resamples."
    body = summary_section(headline, table_out.drop(columns="run"), note) + run_section(blended, 200)
    page = write_page("Demo, ISIC 2024: image model, tables, stacked, ensemble", body, out / "report.html")
    console.print(table_out.drop(columns="run").round(4).to_string(index=False), markup=False)
    console.print(f"[bold green]{step} ensemble pAUC {rows[-1]['pauc_80']:.4f}[/]; report: {page}")
    return table_out
