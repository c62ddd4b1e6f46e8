"""The README's headline figures: measure them, save them, and write them into the pages.

README.md and docs/isic2024.md (PAGES) hold generated blocks between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->`, each block in one page.
Each is rendered from benchmarks/results/readme_figures.json, which this script writes from its own
measurements, each with the machine and the commit it ran on:

- demo: `melanoma demo` from a fresh cache, as its own process (wall time, peak resident memory,
  the AUCs it saves: ablation.csv, ensemble_members.csv);
- demo-2024: `melanoma demo --isic2024` likewise (its summary.csv);
- patient-stats: synthetic ISIC 2024 with 6,000 lesions, `melanoma gbdt` with and without
  `--no-patient-stats`: out-of-fold pAUC.

Run:  .venv/bin/python benchmarks/readme_figures.py [--only demo,demo-2024,patient-stats]
      (about 12 minutes for all three on 2 cores), then commit the pages and the JSON.
      --render: rewrite the pages from the saved JSON, measuring nothing.
      --check: exit 1 if a page is not what the saved JSON renders (the test suite runs this).

The AUCs are the same on every run on one machine (seeded; two runs here gave the same figures);
another CPU type or thread count changes the order of float sums and can move them. Times and
memory are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, ROOT / "docs" / "isic2024.md")
RESULTS = ROOT / "benchmarks" / "results" / "readme_figures.json"
NAMES = ("demo", "demo-2024", "patient-stats", "isic2024-ablation")
# Each page block and the measurement it renders (the 2024 ablation: the full table in
# docs/isic2024.md, its headline rows in the README).
BLOCKS = {**{name: name for name in NAMES}, "isic2024-summary": "isic2024-ablation"}

sys.path.insert(0, str(ROOT / "benchmarks"))  # scripts, not a package: scale.py runs a stage as we need
from scale import melanoma_command, run_stage  # noqa: E402


def machine() -> dict:
    """Where a figure was measured."""
    import torch

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        found = re.search(r"model name\s*:\s*(.+)", info.read_text())
        cpu = found.group(1).strip() if found else cpu
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit.stdout.strip(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d")}  # fmt: skip


def measure_demo(work: Path, extra: list[str]) -> dict:
    """`melanoma demo` from nothing: time, memory and what it saved."""
    import pandas as pd

    env = {**os.environ, "MELANOMA_CACHE": str(work / "cache")}
    seconds, mib = run_stage(
        [melanoma_command(), "demo", *extra, "--out", str(work / "run")], work / "log.txt", env
    )
    found = {"seconds": round(seconds), "peak_gib": round(mib / 1024, 1)}
    if extra:
        found["models"] = pd.read_csv(work / "run" / "summary.csv").drop(columns="run").to_dict("records")
        return found
    found["variants"] = pd.read_csv(work / "run" / "ablation.csv").to_dict("records")
    members = pd.read_csv(work / "run" / "ensemble_members.csv")
    found["members"] = [
        {"member": Path(m).name, "oof_auc": a} for m, a in zip(members.member, members.oof_auc, strict=True)
    ]
    from ood_scores import compare  # benchmarks/ood_scores.py, beside this script

    found["ood"] = compare(work / "run" / "baseline")
    found["external"] = []
    for path in sorted((work / "run" / "baseline").glob("validation_*.json")):
        v = json.loads(path.read_text())
        point = next(p for p in v["points"] if p["target_sensitivity"] >= 0.95)
        found["external"].append({
            "name": v["name"], "images": v["images"], "melanomas": v["positives"], "auc": v["auc"],
            "oof_auc": v["oof"]["auc"], "sensitivity": point["sensitivity"], "sensitivity_low": point["sensitivity_low"],
            "sensitivity_high": point["sensitivity_high"], "single_fold": point["single_fold_sensitivity"],
            "specificity": point["specificity"], "specificity_low": point["specificity_low"],
            "specificity_high": point["specificity_high"],
            "flagged": point["flagged"], "input_flagged": v.get("input_checks", {}).get("flagged"),
            "skin_tone_gap": next((g for g in v.get("gaps", []) if g["column"] == "estimated skin tone (ITA)"), None),
        })  # fmt: skip
    return found


def measure_patient_stats(work: Path) -> dict:
    """The per-patient features' worth: pAUC of LightGBM with and without them on 6,000 lesions."""
    from melanoma.metrics import partial_auc
    from melanoma.rundir import latest_oof

    env, log, data = dict(os.environ), work / "log.txt", work / "data"
    run_stage(
        [melanoma_command(), "synth", str(data), "--isic2024", "--n-train", "6000", "--n-test", "3"], log, env
    )
    found = {"lesions": 6000}
    for key, options in [("with", []), ("without", ["--no-patient-stats"])]:
        run_stage([melanoma_command(), "gbdt", str(data), "--out", str(work / key), *options], log, env)
        oof = latest_oof(work / key)
        found[key] = partial_auc(oof.malignant.to_numpy(), (oof.target == 1).to_numpy())
    return found


def _strict(value: object) -> object:
    """JSON that every reader accepts: NaN (a p-value the baseline has not) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def measure(name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if name == "demo":
            found = measure_demo(work, [])
        elif name == "demo-2024":
            found = measure_demo(work, ["--isic2024"])
        elif name == "isic2024-ablation":
            from isic2024_ablation import ablate

            found = ablate()
        else:
            found = measure_patient_stats(work)
    return _strict({**found, "machine": machine()})


def _where(m: dict) -> str:
    return f"{m['cores']} cores ({m['cpu']}), {m['date']}"


def render_demo(r: dict) -> str:
    base, *others = r["variants"]
    scratch = others[0]
    pooled = {m["member"]: m["oof_auc"] for m in r["members"]}
    ens, alone = pooled["ensemble"], pooled[base["variant"]]
    real = "real" if scratch["auc_p"] < 0.05 else "within the noise"
    if ens < alone:
        verdict = (
            f"below the pretrained model alone ({alone:.3f} pooled): an equal-weight member that is much "
            "worse drags an ensemble down, which is why `melanoma ensemble` shows out-of-fold AUC per member"
        )
    else:
        verdict = f"above the pretrained model alone ({alone:.3f} pooled)"
    text = _fill(
        f"From a fresh cache it takes {r['seconds']} s with a peak of {r['peak_gib']} GiB resident memory "
        f"({_where(r['machine'])}; `benchmarks/readme_figures.py`) and prints: pretrained "
        f"{base['auc_mean']:.3f} +- {base['auc_std']:.3f} AUC over the 3 folds against {scratch['auc_mean']:.3f} +- "
        f"{scratch['auc_std']:.3f} from scratch (paired difference {scratch['auc_diff']:+.3f}, p = "
        f"{scratch['auc_p']:.3f}: {real}), and the ensemble's out-of-fold AUC {ens:.3f}, {verdict}."
    )
    return text + render_external(r.get("external") or []) + render_ood(r.get("ood"))


def render_ood(found: dict | None) -> str:
    """Which out-of-distribution score separates better, and what the input checks flag."""
    if not found:
        return ""
    a, flagged = found["auroc"], found["flagged"]
    better = {
        k: max(a, key=lambda s: a[s][k]) for k in ("photographs vs held-out", "other clinic vs same clinic")
    }
    uses = found["default"]
    photos = flagged["photographs"]
    other = "energy" if uses == "distance" else "distance"
    because = (
        "which separates the photographs better"
        if better["photographs vs held-out"] == uses
        else f"although the {other} separates the photographs better"
    ) + (
        f" (at the thresholds that 95% of out-of-fold images pass, the {uses} flags {photos[uses]:.0%} of "
        f"the photographs, the {other} {photos[other]:.0%})"
    )
    rates = ", ".join(f"{name} {v['flag']:.0%}" for name, v in flagged.items())
    return "\n\n" + _fill(
        "Its input checks (`melanoma ood`; `benchmarks/ood_scores.py`): the feature distance tells non-dermoscopy "
        f"photographs from held-out lesions at AUROC {a['distance']['photographs vs held-out']:.3f} (the energy "
        f"{a['energy']['photographs vs held-out']:.3f}) and the other clinic's images from the same clinic's at "
        f"{a['distance']['other clinic vs same clinic']:.3f} (energy {a['energy']['other clinic vs same clinic']:.3f}); "
        f"the flag uses the {uses}, {because}. Flagged (quality or OOD): {rates}."
    )


def render_external(found: list[dict]) -> str:
    """The demo's external validations: a sentence whose words follow the figures, and a table."""
    if not found:
        return ""
    by = {v["name"]: v for v in found}
    same, shifted = by.get("same-centre"), by.get("shifted-centre")
    words = []
    for v, where in ((same, "the same clinic's new images"), (shifted, "another clinic's images")):
        if v is None:
            continue
        inside = v["auc"]["low"] <= v["oof_auc"] <= v["auc"]["high"]
        moved = (
            "holds (the out-of-fold AUC is inside its interval)"
            if inside
            else (
                "falls (its interval lies below the out-of-fold AUC)"
                if v["auc"]["high"] < v["oof_auc"]
                else "rises (its interval lies above the out-of-fold AUC)"
            )
        )
        flag = (
            "the frozen 95% point is flagged: its sensitivity interval lies wholly below 95%"
            if v["flagged"]
            else "the frozen 95% point is not flagged"
        )
        words.append(f"on {where} the AUC {moved} and {flag}")
    rows = [
        "| external set | images (melanomas) | AUC (95%) | out of fold | sensitivity at the frozen 95% point (95%) "
        "| one fold model alone | specificity there (95%) | point flagged | images flagged by the input checks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in found:
        a = v["auc"]
        checked = "-" if v.get("input_flagged") is None else f"{v['input_flagged'] / v['images']:.0%}"
        rows.append(
            f"| {v['name']} | {v['images']} ({v['melanomas']}) | {a['value']:.3f} ({a['low']:.3f}-{a['high']:.3f}) "
            f"| {v['oof_auc']:.3f} | {v['sensitivity']:.3f} ({v['sensitivity_low']:.3f}-{v['sensitivity_high']:.3f}) "
            f"| {v['single_fold']:.3f} | {v.get('specificity', float('nan')):.3f} ({v.get('specificity_low', float('nan')):.3f}-"
            f"{v.get('specificity_high', float('nan')):.3f}) | {'yes' if v['flagged'] else 'no'} | {checked} |"
        )
    sentence = _fill(
        "The demo then validates the pretrained run on two external sets it did not train on (`melanoma "
        "validate`, thresholds and temperature frozen out of fold): " + "; ".join(words) + "."
    )
    tones = [
        f"{v['name']}: AUC gap {g['auc_gap']:.3f} ({g['auc_gap_low']:.3f}-{g['auc_gap_high']:.3f}) between "
        f"{g['highest']} and {g['lowest']} ({len(g['groups'])} groups scored)"
        for v in found
        if (g := v.get("skin_tone_gap"))
    ]
    tone = (
        "\n\n"
        + _fill(
            "Across estimated skin-tone groups (ITA from the pixels; `melanoma subgroups`): "
            + "; ".join(tones)
            + "."
        )
        if tones
        else ""
    )
    return "\n\n" + sentence + "\n\n" + "\n".join(rows) + tone


def _fill(text: str, indent: str = "") -> str:
    """A paragraph wrapped as the README's prose is (100 columns), never inside a `code span`."""
    import textwrap

    words = re.findall(r"`[^`]*`[^\s]*|\S+", text)
    protected = [w.replace(" ", "\0") for w in words]
    lines = textwrap.wrap(" ".join(protected), 100, initial_indent=indent, subsequent_indent=indent)
    return "\n".join(line.replace("\0", " ") for line in lines)


def render_demo_2024(r: dict) -> str:
    names = {"image model": "image model", "LightGBM, tables": "LightGBM, tables",
             "LightGBM, stacked": "LightGBM, stacked on the image scores",
             "tree ensemble, stacked": "LightGBM + XGBoost + CatBoost, 3 bags each, stacked"}  # fmt: skip
    rows = [
        f"| {names[m['model']]} | {m['pauc_80']:.3f} ({m['pauc_low']:.3f}-{m['pauc_high']:.3f}) | {m['auc']:.3f} "
        f"| {m['top15_sensitivity']:.3f} |"
        for m in r["models"]
    ]
    by = {m["model"]: m for m in r["models"]}
    tables, stacked = by["LightGBM, tables"], by["LightGBM, stacked"]
    overlap = stacked["pauc_low"] <= tables["pauc_high"] and tables["pauc_low"] <= stacked["pauc_high"]
    move = "raises" if stacked["pauc_80"] > tables["pauc_80"] else "lowers"
    said = (f"Stacking on the tiny image model's scores {move} pAUC from {tables['pauc_80']:.3f} to "
            f"{stacked['pauc_80']:.3f}" + ("; the intervals overlap, so here that is within the noise." if overlap
                                            else ", beyond the intervals."))  # fmt: skip
    if "tree ensemble, stacked" in by:
        blend = by["tree ensemble, stacked"]
        apart = blend["pauc_low"] > stacked["pauc_high"] or stacked["pauc_low"] > blend["pauc_high"]
        move = "raises" if blend["pauc_80"] > stacked["pauc_80"] else "lowers"
        said += (f" The tree ensemble {move} the stacked pAUC from {stacked['pauc_80']:.3f} to {blend['pauc_80']:.3f}"
                 + (", beyond the intervals." if apart else "; the intervals overlap."))  # fmt: skip
    return "\n".join(
        [
            f"{r['seconds']} s, peak {r['peak_gib']} GiB ({_where(r['machine'])}; `benchmarks/readme_figures.py`); it prints:",
            "",
            "| model | pAUC above 80% TPR (95% interval) | AUC | per-patient top-15 sensitivity |",
            "|---|---|---|---|",
            *rows,
            "",
            _fill(said),
        ]  # fmt: skip
    )


def render_patient_stats(r: dict) -> str:
    """Indented: the block sits inside a list item."""
    move = "falls" if r["without"] < r["with"] else "rises"
    return _fill(
        f"without them (`--no-patient-stats`) pAUC {move} ({r['with']:.3f} -> {r['without']:.3f} on "
        f"{r['lesions']:,} lesions: `benchmarks/readme_figures.py --only patient-stats` runs `melanoma synth S "
        "--isic2024 --n-train 6000 --n-test 3`, then `melanoma gbdt S` with and without it).",
        "  ",
    )


def _ablation_row(m: dict) -> str:
    return (f"| {m['arm']} | {m['pauc']:.3f} ({m['pauc_low']:.3f}-{m['pauc_high']:.3f}) | {m['gain']:+.3f} "
            f"({m['gain_low']:+.3f} to {m['gain_high']:+.3f}) | {m['auc']:.3f} | {m['top15']:.3f} | "
            f"{m['seconds']:.0f} s | {m['peak_mib'] / 1024:.1f} GiB |")  # fmt: skip


ABLATION_HEAD = ["| model | pAUC (95%) | gain over the first row (paired 95%) | AUC | top-15 | time | peak memory |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip


def _gain_words(m: dict) -> str:
    if m["gain_low"] > 0:
        return "scores above the first row beyond the paired interval"
    if m["gain_high"] < 0:
        return "scores below the first row beyond the paired interval"
    return "scores within the paired interval of the first row"


def render_isic2024_ablation(r: dict) -> str:
    """The full table (docs/isic2024.md)."""
    rows = r["rows"]
    groups = [m for m in rows if m["arm"].startswith("+ ")]
    real = [m["arm"][2:] for m in groups if m["gain_low"] > 0 or m["gain_high"] < 0]
    said = (f"On {r['lesions']:,} synthetic lesions ({r['malignant_rate']:.1%} malignant, {rows[0]['malignant']} "
            f"of them; 5 centres; 5 patient folds), `benchmarks/isic2024_ablation.py` "
            f"({_where(r['machine'])}; each row in its own process):")  # fmt: skip
    groups_said = ("No feature group moves one LightGBM beyond the paired interval: the synthetic malignant lesions "
                   "stand out from their patient, which the per-patient z-scores already see." if not real else
                   f"Beyond the paired interval: {', '.join(real)}.")  # fmt: skip
    best = max(rows, key=lambda m: m["pauc"])
    by = {m["arm"]: m for m in rows}
    stacked, plain = by.get("bagged blend (mean) + image scores"), by.get("bagged blend (mean)")
    if stacked and plain:
        move = "raises" if stacked["pauc"] > plain["pauc"] else "lowers"
        groups_said += (f" Stacking the small image model ({r['image_seconds']:.0f} s to train over the 5 folds) "
                        f"{move} the blend's pAUC from {plain['pauc']:.3f} to {stacked['pauc']:.3f}"
                        + ("; their gains over the first row have overlapping paired intervals, so that "
                           "difference is not shown to be real." if stacked["gain_low"] <= plain["gain_high"]
                           and plain["gain_low"] <= stacked["gain_high"] else ".")
                        )  # fmt: skip
    return "\n".join([_fill(said), "", *ABLATION_HEAD, *map(_ablation_row, rows), "",
                      _fill(groups_said + f" The best row, {best['arm']} ({best['pauc']:.3f}), "
                            f"{_gain_words(best)}.")])  # fmt: skip


def render_isic2024_summary(r: dict) -> str:
    """The README's rows: the model as it was, the best single library, the plain blend."""
    rows = r["rows"]
    by = {m["arm"]: m for m in rows}
    first, blend = rows[0], by["bagged blend (mean)"]
    single = max((m for m in rows if "every group" in m["arm"]), key=lambda m: m["pauc"])
    cleaned = by["bagged blend (mean), --drop-indeterminate"]
    said = (f"`benchmarks/isic2024_ablation.py` on {r['lesions']:,} synthetic lesions ({first['malignant']} "
            f"malignant; {_where(r['machine'])}): the bagged three-library blend {_gain_words(blend)} "
            f"(the one LightGBM `gbdt` used to be; {cleaned['pauc']:.3f} with `--drop-indeterminate`); each "
            "feature group: [docs/isic2024.md](docs/isic2024.md).")  # fmt: skip
    return "\n".join([_fill(said), "", *ABLATION_HEAD, *map(_ablation_row, [first, single, blend])])


RENDER = {"demo": render_demo, "demo-2024": render_demo_2024, "patient-stats": render_patient_stats,
          "isic2024-ablation": render_isic2024_ablation, "isic2024-summary": render_isic2024_summary}  # fmt: skip


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(\n *<!-- /figures:{name} -->)", re.S)


def rendered(page: str, results: dict) -> str:
    """A page with every generated block it holds rendered from the results."""
    for name, key in BLOCKS.items():
        page = _block(name).sub(
            lambda m, n=name, k=key: m.group(1) + RENDER[n](results[k]) + m.group(3), page
        )
    return page


def pages() -> dict[Path, str]:
    """Each page's text; every block is in exactly one of them."""
    texts = {path: path.read_text() for path in PAGES}
    for name in BLOCKS:
        holders = [p.relative_to(ROOT).as_posix() for p, text in texts.items() if _block(name).search(text)]
        if len(holders) != 1:
            raise SystemExit(
                f"<!-- figures:{name} --> ... <!-- /figures:{name} --> is in {holders or 'no page'}; expected one"
            )
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated: " + ", ".join(NAMES))
    parser.add_argument("--render", action="store_true", help="rewrite the pages from the saved JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a page differs from the saved JSON")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.check:
        raise SystemExit(0 if all(rendered(t, results) == t for t in pages().values()) else 1)
    if not args.render:
        for name in args.only.split(","):
            if name not in NAMES:
                raise SystemExit(f"--only: unknown figure {name!r}; expected one of {', '.join(NAMES)}")
            print(f"measuring {name} ...", flush=True)
            results[name] = measure(name)
            print(json.dumps(results[name], indent=1), flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    for path, text in pages().items():
        path.write_text(rendered(text, results))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
