"""The HTML report, opened in headless Chromium (the Debian package; `make test` installs it)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from melanoma.card import write_card
from melanoma.evaluation.calibration import calibrate
from melanoma.evaluation.evaluate import evaluate
from melanoma.evaluation.explain import gallery
from melanoma.evaluation.operating_points import operating_points
from melanoma.evaluation.subgroups import subgroups
from melanoma.report import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(page: Path, out_png: Path) -> tuple[str, list[str]]:
    """The DOM text after rendering, and every console message; also a screenshot."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=0", "--window-size=1200,3000"]  # fmt: skip
    shot = subprocess.run(
        [*flags, f"--screenshot={out_png}", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return dom.stdout, console


@pytest.fixture(scope="module")
def browser_ok(tmp_path_factory):
    assert CHROMIUM, "Chromium is missing: `make test` installs the Debian package chromium"
    # The console check can fail: a page with a script error is caught.
    bad = tmp_path_factory.mktemp("bad") / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, console = _browser(bad, bad.with_suffix(".png"))
    assert any("undefinedFunction" in line for line in console)
    return True


def test_run_report_in_a_browser(tiny_runs, tmp_path, browser_ok):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["name"] = '<img src=x onerror="alert(1)">'  # text from settings must be escaped
    (run / "config.json").write_text(json.dumps(cfg))
    result = evaluate(run, tiny_runs["table"], tta=True, n_boot=50, progress=False)  # the newest OOF file
    calibrate(run)
    ops = operating_points(run, n_boot=50)
    groups = subgroups(run, tiny_runs["table"], n_boot=30)
    shown = gallery(run, tiny_runs["table"], None, n=2, progress=False)
    write_card(run)
    page = report(run, n_boot=50)
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    assert "<img src=x" not in text and "&lt;img src=x onerror=" in text
    dom, console = _browser(page, tmp_path / "shot.png")
    assert console == []
    png = (tmp_path / "shot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert dom.count("data:image/png;base64,") >= 2  # training curves and ROC
    for fold in result.folds:
        assert f"{fold['auc']:.4f}" in dom
    auc = next(s["value"] for s in result.scores if s["metric"] == "auc" and s["rows"] == "all")
    assert f"{auc:.4f}" in dom
    for heading in (
        "classes per source and per fold",
        "Training curves",
        "ROC curves",
        "Per fold",
        "config.json",
        "Calibration",
        "Operating points",
        "Subgroups",
        "Explanations: confident misses and false alarms",
        "Model card",
    ):
        assert heading in dom
    assert "Not computed yet" not in dom
    assert f"temperature {json.loads((run / 'calibration.json').read_text())['temperature']:.3f}" in dom
    assert f"{ops.points[1].specificity:.3f}" in dom and f"{groups.threshold:.4f}" in dom
    assert dom.count("<figure>") == len(shown.items) == 4 and "false alarm: " in dom and "miss: " in dom
    assert "# Model card: run" in dom


def test_suite_and_ensemble_reports(tiny_runs, tmp_path, tiny_data, browser_ok):
    from melanoma.evaluation.ensemble import ensemble
    from melanoma.evaluation.predict import predict_test, to_submission
    from melanoma.experiments.ablate import Suite, run

    suite = Suite("tiny", {"backbone": "test_efficientnet", "image_size": 32, "epochs": 1, "batch_size": 16,
                           "num_workers": 0, "pretrained": False}, {"no-augmentation": {"augment": False}}, folds=[0, 1])  # fmt: skip
    run(suite, tiny_data, tmp_path / "suite", progress=False)
    page = report(tmp_path / "suite", n_boot=30)
    dom, console = _browser(page, tmp_path / "suite.png")
    assert console == [] and "Ablation suite tiny" in dom and "no-augmentation" in dom
    assert len(re.findall(r'alt="ablation_(not_)?helped"', dom)) == 1  # one variant: helped or not
    assert "Not computed yet" in dom and "melanoma calibrate" in dom  # the clinical sections say how
    member = tiny_runs["plain"]
    to_submission(predict_test(member, tiny_runs["table"], tta=False, progress=False).probs, member).to_csv(
        member / "submission.csv", index=False
    )
    ensemble([member, member], out=tmp_path / "ens.csv")
    page = report(tmp_path / "ens.csv", n_boot=30)
    dom, console = _browser(page, tmp_path / "ens.png")
    assert console == [] and "Ensemble ens.csv" in dom and "oof_auc" in dom
    with pytest.raises(ValueError, match="not a run directory"):
        report(tmp_path)
