"""Every chart the toolkit draws, checked twice: its texts lie inside the picture and apart
(plots.text_problems, on inputs made to crowd them), and as a reader sees it, in headless
Chromium screenshots (Playwright with the system Chromium): shown at its own size in a report
page, the colours meaning what the legend says, the points filling the axes."""

import io
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.evaluation.calibration import apply_temperature, reliability_diagram
from melanoma.evaluation.selection import plot as selection_plot
from melanoma.evaluation.selection import short_names
from melanoma.experiments.ablate import BASELINE, charts, compare
from melanoma.plots import COLOURS, ChartLayoutWarning, pyplot, save, text_problems
from melanoma.report import _image_file, write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LONG = ["no-augmentation", "tf_efficientnet_b3_ns-512-ext-15ep", "metadata-branch-off", "lr-3e-5x10",
        "binary-labels", "no-cutout-and-no-microscope-and-no-hair", "image-size-640", "a", "b"]  # fmt: skip


@pytest.fixture(autouse=True)
def layout_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChartLayoutWarning)
        yield


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is missing: `make test` installs the Debian package chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _shots(browser, page_path) -> list[tuple[str, np.ndarray]]:
    """Each <img> of the page as Chromium draws it at a 1,200-pixel-wide window (RGB array), after
    checking it loaded and is shown at its own size (not shrunk to fit, not cut)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.as_uri())
    out = []
    for i in range(page.locator("img").count()):
        img = page.locator("img").nth(i)
        natural, shown, loaded = img.evaluate("i => [i.naturalWidth, i.clientWidth, i.complete]")
        assert loaded and natural > 0 and shown == natural, (img.get_attribute("alt"), natural, shown)
        picture = Image.open(io.BytesIO(img.screenshot())).convert("RGB")
        out.append((img.get_attribute("alt"), np.asarray(picture)))
    page.close()
    assert errors == []
    return out


def _runs(pixels: np.ndarray, colour: str, wide: int = 12) -> int:
    """How many separate bands of rows hold this colour over at least `wide` pixels side by side
    (a horizontal bar, or a legend patch, is one band; anti-aliased text is never that wide)."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    hit = (np.abs(pixels.astype(int) - rgb).max(axis=2) <= 2).astype(int)
    run = np.zeros(hit.shape[0], dtype=int)  # the longest run of the colour in each row
    current = np.zeros(hit.shape[0], dtype=int)
    for column in hit.T:
        current = (current + 1) * column
        run = np.maximum(run, current)
    rows = run >= wide
    return int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])


def _page(tmp_path, pngs) -> object:
    body = "".join(_image_file(p, p.stem) for p in pngs)
    return write_page("charts", body, tmp_path / "charts.html")


def test_the_layout_check_can_fail():
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title much too long to fit in a picture three inches wide, by far")
    ax.text(0.5, 0.5, "x", transform=ax.transAxes)
    ax.set_xlabel("label")
    ax.set_ylabel("label")
    problems = text_problems(fig)
    assert any("is cut off" in p and "title" in p for p in problems), problems
    fig2, ax2 = plt.subplots(figsize=(3, 3))
    ax2.bar(["a first long label", "a second long label", "a third long label"], [1, 2, 3])
    assert any("overlaps" in p for p in text_problems(fig2))
    with pytest.raises(ChartLayoutWarning, match="overlaps"):
        save(fig2, io.BytesIO())


def _suite_table(names):
    """An ablation table: variants above and below the baseline, every other one within the noise."""
    rows = []
    for i, name in enumerate([BASELINE, *names]):
        delta = 0.0 if i == 0 else 0.01 * i * (1 if i % 3 else -1)
        noise = [0.0, 0.03, -0.03] if i % 2 == 0 and i else [0.0, 0.001, 0.002]
        for fold in range(3):
            auc = 0.80 + delta + noise[fold]
            rows.append({"variant": name, "fold": fold, "auc": auc, "auc_20": auc - 0.02 * (i % 2)})
    return compare(pd.DataFrame(rows))


def test_ablation_charts_say_what_their_colours_mean(tmp_path, browser):
    table = _suite_table(LONG)
    paths = charts(table, tmp_path)  # no layout warning with nine long names
    assert [p.name for p in paths] == ["ablation_helped.png", "ablation_not_helped.png"]
    shots = dict(_shots(browser, _page(tmp_path, paths)))
    others = table[table.variant != BASELINE]
    for name, part in [("ablation_helped", others[others.auc_diff > 0]), ("ablation_not_helped", others[others.auc_diff <= 0])]:  # fmt: skip
        pixels = shots[name]
        assert _runs(pixels, COLOURS["baseline"]) == 1 + 1  # the baseline's bar (one band), its legend patch
        real = part[["auc_real", "auc_20_real"]].to_numpy()  # a bar per panel on each variant's row
        assert _runs(pixels, COLOURS["real"]) == int(real.any(axis=1).sum()) + 1
        assert _runs(pixels, COLOURS["not_real"]) == int((~real).any(axis=1).sum()) + 1
    assert 0 < others.auc_real.sum() < len(others)  # both kinds shown


def test_ablation_chart_has_one_panel_without_2019_rows(tmp_path, browser):
    two = charts(_suite_table(["up", "down", "more"]), tmp_path)[0]
    table = _suite_table(["up", "down", "more"])
    table["auc_20_mean"] = table.auc_mean  # AUC_20 is AUC when no ISIC 2019 row is in the folds
    (tmp_path / "one").mkdir()
    one = charts(table, tmp_path / "one")[0]
    (_, pixels_one), (_, pixels_two) = _shots(browser, _page(tmp_path, [one, two]))
    assert pixels_one.shape[1] < 0.7 * pixels_two.shape[1]  # one panel, not two with the same bars


def test_the_reliability_diagram_spans_its_points(tmp_path, browser):
    rng = np.random.default_rng(0)
    p = rng.beta(1, 15, 3000)  # a rare class: every probability under about 0.3
    y = rng.random(3000) < p
    path = reliability_diagram(
        p, apply_temperature(p, 1.2), y, 1.2, tmp_path / "reliability.png", "malignant"
    )
    ((_, pixels),) = _shots(browser, _page(tmp_path, [path]))
    rgb = np.array([int(COLOURS["after"][i : i + 2], 16) for i in (1, 3, 5)])
    xs = np.nonzero((np.abs(pixels.astype(int) - rgb).max(axis=2) <= 2).any(axis=0))[0]
    assert xs.max() - xs.min() > 0.55 * pixels.shape[1]  # on 0-1 axes these points took under a third


def test_selection_colours_separate_the_flagged(tmp_path, browser):
    names = [f"runs/{g}/{m}" for g in ("a", "b") for m in ("b3", "b4", "b5")] + [
        "runs/9c_b4ns_768_640_ext_15ep"
    ]
    table = pd.DataFrame({"candidate": names, "divergence": [0.02, 0.2, 0.03, 0.04, 0.15, 0.01, 0.05],
                          "importance": [0.0, 0.01, 0.05, 0.01, 0.03, 0.0, 0.01]})  # fmt: skip
    table["flagged"] = (table.divergence > 0.1) | (table.importance > 0.02)
    path = selection_plot(table, 0.7, 0.1, 0.02, tmp_path / "selection.png")
    ((_, pixels),) = _shots(browser, _page(tmp_path, [path]))
    over = (table.divergence > 0.1) | (table.importance > 0.02)  # red in at least one panel
    elsewhere = (table.divergence > 0.1) ^ (table.importance > 0.02)  # orange in the other
    assert _runs(pixels, COLOURS["over"]) == int(over.sum()) + 1
    assert _runs(pixels, COLOURS["flagged_elsewhere"]) == int(elsewhere.sum()) + 1
    assert _runs(pixels, COLOURS["kept"]) == int((~table.flagged).sum()) + 1
    assert short_names(names) == ["a/b3", "a/b4", "a/b5", "b/b3", "b/b4", "b/b5", "9c_b4ns_768_640_ext_15ep"]


def test_a_run_report_shows_every_chart_at_its_own_size(tiny_runs, tmp_path, browser):
    from melanoma.evaluation.calibration import calibrate
    from melanoma.report import report

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    calibrate(run)
    shots = _shots(browser, report(run, n_boot=20))  # each shown unshrunk at 1,200 px, none cut
    assert [alt for alt, _ in shots][:2] == ["training curves", "ROC curves"] and len(shots) >= 3
