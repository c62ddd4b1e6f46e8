"""The README and docs/ say what is true: their generated blocks are what the saved measurements
render, every benchmark script they cite exists (and every script is cited), every link between
pages lands on a page and a heading, and every docs/ page the code cites exists."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
ALL = "\n".join(DOCS.values())


def _figures():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_blocks_are_the_saved_measurements():
    figures = _figures()
    results = json.loads(figures.RESULTS.read_text())
    assert figures.rendered(README, results) == README  # run `benchmarks/readme_figures.py --render`
    for text in figures.pages().values():  # every block is in one page, and each page is rendered
        assert figures.rendered(text, results) == text
    for name in figures.NAMES:
        assert results[name]["machine"]["commit"] and results[name]["machine"]["cores"] >= 1
    # the check can fail: a figure edited by hand, or a measurement changed, is caught
    demo = results["demo"]["variants"][0]
    shown = f"{demo['auc_mean']:.3f} +- {demo['auc_std']:.3f}"
    assert shown in README
    assert figures.rendered(README.replace(shown, "0.999 +- 0.001"), results) != README.replace(
        shown, "0.999 +- 0.001"
    )
    changed = json.loads(json.dumps(results))
    changed["demo-2024"]["models"][2]["pauc_80"] += 0.01
    assert figures.rendered(README, changed) != README
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "readme_figures.py"), "--check"], cwd=ROOT
    )
    assert done.returncode == 0


def test_the_words_follow_the_figures():
    figures = _figures()
    results = json.loads(figures.RESULTS.read_text())
    demo = json.loads(json.dumps(results["demo"]))
    alone = next(m for m in demo["members"] if m["member"] == "baseline")["oof_auc"]
    for m in demo["members"]:
        if m["member"] == "ensemble":
            m["oof_auc"] = alone - 0.01
    assert "drags an ensemble down" in figures.render_demo(demo)
    next(m for m in demo["members"] if m["member"] == "ensemble")["oof_auc"] = alone + 0.01
    assert "above the pretrained model alone" in figures.render_demo(demo)
    shifted = next(v for v in demo["external"] if v["name"] == "shifted-centre")
    shifted.update(auc={"value": 0.6, "low": 0.55, "high": 0.65}, oof_auc=0.8, flagged=True)
    text = " ".join(figures.render_demo(demo).split())
    assert "on another clinic's images the AUC falls (its interval lies below the out-of-fold AUC)" in text
    assert "and the frozen 95% point is flagged: its sensitivity interval lies wholly below 95%" in text
    shifted.update(auc={"value": 0.8, "low": 0.75, "high": 0.85}, flagged=False)
    text = " ".join(figures.render_demo(demo).split())
    assert "on another clinic's images the AUC holds" in text and "95% point is not flagged" in text
    ood = demo["ood"]
    ood["auroc"]["energy"]["photographs vs held-out"] = (
        ood["auroc"]["distance"]["photographs vs held-out"] + 0.01
    )
    assert "although the energy separates the photographs better" in " ".join(
        figures.render_demo(demo).split()
    )
    models = json.loads(json.dumps(results["demo-2024"]))
    by = {m["model"]: m for m in models["models"]}
    by["LightGBM, stacked"].update(pauc_80=0.05, pauc_low=0.04, pauc_high=0.06)
    by["LightGBM, tables"].update(pauc_80=0.09, pauc_low=0.08, pauc_high=0.10)
    assert "lowers pAUC from 0.090 to 0.050, beyond the intervals" in figures.render_demo_2024(models)


def test_every_benchmark_is_cited_and_every_citation_exists():
    cited = set(re.findall(r"benchmarks/([\w.]+\.(?:py|sh))", ALL)) - {"NAME.py"}  # the pattern itself
    cited |= {
        name for name in re.findall(r"`([\w]+\.(?:py|sh))`", ALL) if (ROOT / "benchmarks" / name).exists()
    }
    present = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    assert cited <= present, cited - present
    assert present <= cited, present - cited  # a script nobody reads about is a figure nobody sees


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_pages_lands():
    found = []
    for page, text in DOCS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.is_file():
                found.append(f"{page.name}: {target} (no such file)")
            elif anchor:
                headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    found.append(f"{page.name}: {target} (no such heading)")
    assert found == []
    assert _anchor("The fast input pipeline") == "the-fast-input-pipeline"


def test_every_docs_page_the_code_cites_exists():
    cited = set()
    for folder in ("src", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            cited |= set(re.findall(r"docs/([\w-]+\.md)", path.read_text()))
    assert cited >= {"recipe.md", "ablations.md", "data-formats.md"}  # the facts the code cites
    assert {name for name in cited if not (ROOT / "docs" / name).is_file()} == set()


def test_the_readme_is_the_front_door():
    """About 250 lines: what it is, the two commands, real data, the commands, where to read on."""
    assert len(README.splitlines()) <= 260
    for heading in ("## The demo", "## Running on the real ISIC data", "## Commands", "## Where to read on"):
        assert f"\n{heading}\n" in README, heading
    assert "make demo" in README and "make test" in README
    for page in (ROOT / "docs").glob("*.md"):  # every page is reachable from the front door
        assert f"docs/{page.name}" in README, page.name
