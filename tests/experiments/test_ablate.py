import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.experiments.ablate import (
    BASELINE,
    REPRODUCTION,
    Suite,
    charts,
    compare,
    load_suite,
    run,
    summarize,
    unit_commands,
    units,
)

SUITE_TOML = """
name = "tiny"
folds = [0, 1]
[baseline]
backbone = "test_efficientnet"
image_size = 32
epochs = 1
batch_size = 16
lr = 3e-4
pretrained = false
num_workers = 0
[variants.no-augmentation]
augment = false
[variants.binary-labels]
scheme = "2c"
"""


def test_paired_comparison_on_fixed_numbers():
    per_fold = pd.DataFrame(
        {
            "variant": [BASELINE] * 3 + ["better"] * 3 + ["noisy"] * 3,
            "fold": [0, 1, 2] * 3,
            "auc": [0.80, 0.82, 0.84, 0.85, 0.86, 0.90, 0.83, 0.78, 0.88],
            "auc_20": [0.70, 0.72, 0.74, 0.70, 0.72, 0.74, 0.60, 0.62, 0.64],
        }
    )
    table = compare(per_fold).set_index("variant")
    assert list(table.index) == [BASELINE, "better", "noisy"]
    assert table.loc["better", "auc_mean"] == pytest.approx(0.87)
    assert table.loc["better", "auc_std"] == pytest.approx(np.std([0.85, 0.86, 0.90], ddof=1))
    assert table.loc["better", "auc_diff"] == pytest.approx(0.05)
    expected_p = stats.ttest_rel([0.85, 0.86, 0.90], [0.80, 0.82, 0.84]).pvalue
    assert table.loc["better", "auc_p"] == pytest.approx(expected_p) and expected_p < 0.05
    assert table.loc["better", "auc_real"]
    # +0.03, -0.04, +0.04 around the baseline: the folds disagree, not a real difference
    assert table.loc["noisy", "auc_diff"] == pytest.approx(0.01) and not table.loc["noisy", "auc_real"]
    assert table.loc["better", "auc_20_diff"] == 0 and not table.loc["better", "auc_20_real"]
    # the same drop of 0.10 on every fold: real, with no spread to test against
    assert table.loc["noisy", "auc_20_p"] == 0.0 and table.loc["noisy", "auc_20_real"]


def test_suites_builtin_and_from_a_file(tmp_path):
    names = REPRODUCTION.names()
    assert names[0] == BASELINE and len(names) == 17 and REPRODUCTION.folds == [0, 1, 2]
    cfg = REPRODUCTION.config("no-pretraining", tmp_path, 2)
    assert (cfg.backbone, cfg.pretrained, cfg.batch_size, cfg.folds, cfg.out) == (
        "efficientnet_b3", False, 48, [2], str(tmp_path / "no-pretraining"),
    )  # fmt: skip
    assert REPRODUCTION.config("binary-labels", tmp_path, 0).scheme == "2c"
    path = tmp_path / "suite.toml"
    path.write_text(SUITE_TOML)
    suite = load_suite(path)
    assert suite.name == "tiny" and suite.variants["binary-labels"] == {"scheme": "2c"}
    assert len(units(suite)) == 6
    bad = tmp_path / "bad.toml"
    bad.write_text(SUITE_TOML.replace("augment = false", "augmnt = false"))
    with pytest.raises(ValueError, match="no-augmentation: unknown settings augmnt"):
        load_suite(bad)
    with pytest.raises(ValueError, match="neither a built-in suite"):
        load_suite(tmp_path / "missing.toml")


def test_units_run_skip_and_results(tmp_path, tiny_data):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE_TOML)
    suite = load_suite(path)
    out = tmp_path / "abl"
    commands = unit_commands(str(path), suite, tiny_data, out)
    assert len(commands) == 6 and "--variant baseline --fold 0" in commands[0]
    trained = run(
        suite, tiny_data, out, variant=BASELINE, fold=1, progress=False
    )  # one unit, as a scheduler would
    assert trained == [(BASELINE, 1)]
    assert len(unit_commands(str(path), suite, tiny_data, out)) == 5  # that one is done
    trained = run(suite, tiny_data, out, progress=False)
    assert (BASELINE, 1) not in trained and len(trained) == 5  # finished units are skipped
    assert run(suite, tiny_data, out, progress=False) == []
    per_fold, table, pngs = summarize(suite, out)
    assert len(per_fold) == 6 and set(table.variant) == {BASELINE, "no-augmentation", "binary-labels"}
    metrics = pd.read_csv(out / "binary-labels" / "metrics.csv")
    assert (
        per_fold.set_index(["variant", "fold"]).loc[("binary-labels", 0), "auc"]
        == metrics[metrics.fold == 0].auc.max()
    )
    others = table[table.variant != BASELINE]
    expected = [
        f"ablation_{n}.png"
        for n, part in [("helped", others.auc_diff > 0), ("not_helped", others.auc_diff <= 0)]
        if part.any()
    ]
    assert [p.name for p in pngs] == expected
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert json.loads((out / "suite.json").read_text())["name"] == "tiny"
    other = Suite("other", {"epochs": 2, "pretrained": False}, {"x": {"lr": 1.0}})
    with pytest.raises(ValueError, match="holds another suite"):
        run(other, tiny_data, out, progress=False)


def test_ablate_cli(tmp_path, tiny_data):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE_TOML.replace("folds = [0, 1]", "folds = [0]"))
    out = tmp_path / "abl"
    runner = CliRunner()
    r = runner.invoke(app, ["ablate", "units", str(path), "--data", str(tiny_data), "--out", str(out)])
    assert r.exit_code == 0 and r.output.count("melanoma ablate run") == 3, r.output
    r = runner.invoke(app, ["ablate", "run", str(path), "--data", str(tiny_data), "--out", str(out)])
    assert r.exit_code == 0 and "no-augmentation" in r.output and "ablation_helped.png" in r.output, r.output
    r = runner.invoke(app, ["ablate", "results", str(out)])
    assert r.exit_code == 0 and "binary-labels" in r.output


def test_charts_split_helped_and_not(tmp_path):
    table = compare(
        pd.DataFrame(
            {
                "variant": [BASELINE, BASELINE, "up", "up", "down", "down"],
                "fold": [0, 1] * 3,
                "auc": [0.8, 0.8, 0.9, 0.9, 0.7, 0.7],
                "auc_20": [0.8] * 6,
            }
        )  # fmt: skip
    )
    paths = charts(table, tmp_path)
    assert [p.name for p in paths] == ["ablation_helped.png", "ablation_not_helped.png"]
    # nothing helped: no empty "helped" chart, and the old one goes
    worse = compare(
        pd.DataFrame({"variant": [BASELINE, BASELINE, "down", "down"], "fold": [0, 1] * 2,
                      "auc": [0.8, 0.8, 0.7, 0.7], "auc_20": [0.8] * 4})
    )  # fmt: skip
    assert [p.name for p in charts(worse, tmp_path)] == ["ablation_not_helped.png"]
    assert not (tmp_path / "ablation_helped.png").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "-rf", "with space", "x\\y", ""])
def test_variant_names_that_would_leave_out_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match="variant names become folders under --out"):
        Suite("s", {"epochs": 1}, {name: {"lr": 1e-4}})
    path = tmp_path / "suite.toml"
    path.write_text(
        f'name = "s"\n[baseline]\nepochs = 1\n[variants."{name}"]\nlr = 1e-4\n'.replace("\\", "\\\\")
    )
    with pytest.raises(ValueError, match="variant names become folders"):
        load_suite(path)
    assert Suite("s", {}, {"lr-1.5e-5_b": {"lr": 1.5e-5}}).names() == [BASELINE, "lr-1.5e-5_b"]


def test_the_reproduction_suites_schedule_switches_mean_what_the_reproduction_ran(tmp_path):
    from melanoma.training.train import lr_at

    def schedule(variant):
        cfg = REPRODUCTION.config(variant, tmp_path, 0)
        return [lr_at(e, cfg) for e in range(cfg.epochs)]

    assert schedule(BASELINE)[:2] == pytest.approx([3e-5, 3e-4])  # warm-up epoch, then the 10x peak
    assert schedule("no-warmup") == [3e-5] * 15  # no scheduler at all
    assert schedule("no-cosine") == pytest.approx([3e-5] + [3e-4] * 14)
    assert max(schedule("lr-1.5e-5")) == pytest.approx(1.5e-4)


def test_a_suite_is_printed_as_toml_shrunk_and_read_back(tmp_path):
    """The built-in suite once could not be shrunk or printed; keys written as the
    train options are (workers, image-size, meta) were refused as unknown settings."""
    from typer.testing import CliRunner

    from melanoma.cli import app
    from melanoma.experiments.ablate import REPRODUCTION, load_suite, shrink, suite_toml

    whole = tmp_path / "whole.toml"
    whole.write_text(suite_toml(REPRODUCTION))
    assert load_suite(whole) == REPRODUCTION  # the file reads back as the suite itself
    r = CliRunner().invoke(app, ["ablate", "show", "reproduction", "--variants", "no-augmentation,amp",
                                 "--folds", "0,1", "--epochs", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    small = tmp_path / "small.toml"
    small.write_text(r.output)
    got = load_suite(small)
    assert list(got.variants) == ["no-augmentation", "amp"] and got.folds == [0, 1]
    assert got.baseline == {"preset": "baseline", "epochs": 3} and got.variants["amp"] == {"amp": "bf16"}
    with pytest.raises(ValueError, match="has no variant nope"):
        shrink(REPRODUCTION, ["nope"])
    aliases = tmp_path / "aliases.toml"
    aliases.write_text(
        'name = "a"\nfolds = [0]\n[baseline]\nworkers = 0\nimage-size = 32\n[variants.m]\nmeta = true\n'
    )
    suite = load_suite(aliases)
    assert suite.baseline == {"num_workers": 0, "image_size": 32} and suite.variants["m"] == {
        "use_meta": True
    }


def test_a_suite_folder_is_read_in_one_place(tmp_path):
    from melanoma.experiments.ablate import is_suite_folder, save_suite, saved_suite

    suite = Suite("s", {"epochs": 1}, {"x": {"lr": 1e-4}}, [0])
    assert not is_suite_folder(tmp_path)
    with pytest.raises(ValueError, match="suite.json: not found; run `melanoma ablate run` first"):
        saved_suite(tmp_path)
    save_suite(suite, tmp_path)
    assert is_suite_folder(tmp_path) and saved_suite(tmp_path) == suite
    (tmp_path / "suite.json").write_text('{"name": "s", "nonsense": 1}')
    with pytest.raises(ValueError, match="not a suite"):
        saved_suite(tmp_path)
