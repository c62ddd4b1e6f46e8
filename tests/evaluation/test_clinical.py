"""Clinical evaluation: calibration, operating points, subgroups (evaluation/calibration.py,
operating_points.py, subgroups.py) and their results' types."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.evaluation.calibration import apply_temperature, ece, fit_temperature, scores
from melanoma.evaluation.operating_points import at_threshold, operating_point, threshold_at
from melanoma.evaluation.subgroups import SKIN_TONE, age_band, equity_gaps, subgroup_table
from melanoma.metrics import melanoma_auc

RUNNER = CliRunner()


def _calibrated_scores(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Melanoma logits and outcomes drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-2.5, 1.5, n)
    return z, rng.random(n) < 1 / (1 + np.exp(-z))


def test_an_over_confident_model_gets_its_temperature_back():
    z, y = _calibrated_scores()
    over = 1 / (1 + np.exp(-3 * z))  # logits x 3: over-confident on purpose
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, abs=0.15)
    fixed = apply_temperature(over, t)
    assert ece(fixed, y) < ece(over, y) / 4 and ece(fixed, y) < 0.01
    before, after = scores(over, y), scores(fixed, y)
    assert after["log_loss"] < before["log_loss"] and after["brier"] < before["brier"]
    assert melanoma_auc(fixed, y) == melanoma_auc(over, y)  # a monotone map: AUC never changes
    assert fit_temperature(1 / (1 + np.exp(-z)), y) == pytest.approx(1.0, abs=0.06)  # calibrated stays


def test_ece_uses_15_equal_mass_bins():
    p = np.linspace(0.01, 0.99, 30)
    y = np.zeros(30)  # every bin of 2 rows: observed 0, predicted its mean
    assert ece(p, y) == pytest.approx(p.mean())
    y = (np.arange(30) % 2).astype(float)  # each bin (2 rows, sorted) holds one melanoma: observed 0.5
    expected = np.mean([abs(0.5 - p[i : i + 2].mean()) for i in range(0, 30, 2)])
    assert ece(p, y) == pytest.approx(expected)


SCORES = np.array([0.9, 0.8, 0.7, 0.2, 0.85, 0.6, 0.5, 0.4, 0.3, 0.1])
IS_MEL = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)


def test_operating_points_on_hand_made_scores():
    assert threshold_at(SCORES, IS_MEL, 0.75) == 0.7  # 3 of 4 melanomas
    assert threshold_at(SCORES, IS_MEL, 0.5) == 0.8
    assert threshold_at(SCORES, IS_MEL, 0.9) == threshold_at(SCORES, IS_MEL, 0.95) == 0.2  # all 4
    point = at_threshold(SCORES, IS_MEL, 0.7)
    assert (point["tp"], point["fp"], point["tn"], point["fn"]) == (3, 1, 5, 1)
    assert point["specificity"] == pytest.approx(5 / 6) and point["ppv"] == 0.75
    assert point["npv"] == pytest.approx(5 / 6) and point["biopsies_per_melanoma"] == pytest.approx(4 / 3)
    point = at_threshold(SCORES, IS_MEL, 0.2)
    assert point["specificity"] == pytest.approx(1 / 6) and point["ppv"] == pytest.approx(4 / 9)
    assert point["npv"] == 1.0 and point["biopsies_per_melanoma"] == pytest.approx(9 / 4)
    # bootstrap: the point lies within its interval; a perfectly separating score has no spread
    full = operating_point(SCORES, IS_MEL, 0.75, n_boot=300)
    for m in ("threshold", "sensitivity", "specificity", "ppv", "npv", "biopsies_per_melanoma"):
        assert full[f"{m}_low"] <= full[m] <= full[f"{m}_high"], m
    perfect = operating_point(np.r_[np.linspace(0.6, 0.9, 20), np.linspace(0, 0.5, 80)],
                              np.r_[np.ones(20, bool), np.zeros(80, bool)], 0.95, n_boot=200)  # fmt: skip
    assert perfect["specificity"] == perfect["specificity_low"] == perfect["specificity_high"] == 1.0
    assert perfect["ppv_low"] == 1.0 and perfect["biopsies_per_melanoma_high"] == 1.0
    with pytest.raises(ValueError, match="sensitivity must lie"):
        threshold_at(SCORES, IS_MEL, 1.5)


def test_age_bands():
    ages = pd.Series([np.nan, 0, 29, 30, 44, 45, 59, 60, 74, 75, 90])
    assert list(age_band(ages)) == ["unknown", "<30", "<30", "30-44", "30-44", "45-59", "45-59",
                                    "60-74", "60-74", "75+", "75+"]  # fmt: skip


def test_a_model_worse_for_one_site_is_flagged_there_only():
    rng = np.random.default_rng(1)
    parts = []
    for site, n, good in [("torso", 1500, True), ("head/neck", 1500, True), ("palms/soles", 1500, False),
                          ("oral/genital", 12, True)]:  # fmt: skip
        y = rng.random(n) < 0.1
        score = np.where(y, rng.normal(1.5, 1, n), rng.normal(0, 1, n)) if good else rng.normal(0, 1, n)
        parts.append(pd.DataFrame({"score": score, "is_melanoma": y, "anatom_site": site,
                                   "sex": rng.choice(["male", "female"], n)}))  # fmt: skip
    frame = pd.concat(parts, ignore_index=True)
    table = subgroup_table(frame, ("anatom_site", "sex"), threshold=0.5, n_boot=200)
    status = dict(zip(table.group, table.status, strict=True))
    assert status["palms/soles"] == "below overall"
    assert status["torso"] == status["head/neck"] == status["male"] == status["female"] == "ok"
    assert status["oral/genital"].startswith("too small to score")  # shown, not hidden
    small = table[table.group == "oral/genital"].iloc[0]
    assert small.images == 12 and np.isnan(small.auc)
    overall = table.iloc[0]
    assert overall.column == "all" and overall.images == 4512
    torso = table[table.group == "torso"].iloc[0]
    at = (frame.anatom_site == "torso").to_numpy()
    sens = np.mean(frame.score[at & frame.is_melanoma] >= 0.5)
    assert (
        torso.sensitivity == pytest.approx(sens) and torso.sensitivity_low <= sens <= torso.sensitivity_high
    )


@pytest.fixture()
def run(tiny_runs, tmp_path):
    """A copy of a trained run (the commands below write into it)."""
    shutil.copytree(tiny_runs["plain"], tmp_path / "run")
    return tmp_path / "run"


def test_commands_write_into_the_run_and_predict_uses_them(run, tiny_runs, tiny_data, tmp_path):
    from melanoma.rundir import latest_oof

    r = RUNNER.invoke(app, ["calibrate", str(run)])
    assert r.exit_code == 0, r.output
    fit = json.loads((run / "calibration.json").read_text())
    assert (run / "calibration.png").stat().st_size > 5000
    assert fit["rows"] == len(latest_oof(run)) and fit["temperature"] > 0
    assert fit["after"]["log_loss"] <= fit["before"]["log_loss"] + 1e-9
    r = RUNNER.invoke(app, ["operating-points", str(run), "--sensitivity", "0.8", "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    points = json.loads((run / "operating_points.json").read_text())["points"]
    assert [p["target_sensitivity"] for p in points] == [0.8, 0.9, 0.95]
    assert all(p["sensitivity"] >= p["target_sensitivity"] for p in points)
    # predict --images: calibrated probabilities, said so; flags at the 95% point's threshold
    folder = tmp_path / "photos"
    folder.mkdir()
    table = tiny_runs["table"]
    for p in table[table.split == "test"].image_path.head(6):
        shutil.copy(p, folder)
    out = tmp_path / "pred.csv"
    r = RUNNER.invoke(app, ["predict", str(run), "--images", str(folder), "--no-tta", "--operating-point", "0.95",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "calibrated with temperature" in r.output
    pred = pd.read_csv(out)
    assert pred.melanoma.to_numpy() == pytest.approx(apply_temperature(pred.p_melanoma, fit["temperature"]))
    assert list(pred.flagged) == list(pred.p_melanoma >= points[2]["threshold"])
    # subgroups from the run's data
    r = RUNNER.invoke(
        app,
        [
            "subgroups",
            str(run),
            "--data",
            str(tiny_data),
            "--bootstrap",
            "50",
            "--by",
            "is_ext",
            "--no-skin-tone",
        ],
    )
    assert r.exit_code == 0, r.output
    groups = pd.DataFrame(json.loads((run / "subgroups.json").read_text())["groups"])
    assert set(groups.column) == {"all", "sex", "age_band", "anatom_site", "source", "is_ext"}
    assert groups[groups.column == "sex"].images.sum() == groups.images.iloc[0]
    r = RUNNER.invoke(app, ["subgroups", str(run), "--data", str(tiny_data), "--by", "shoe_size"])
    assert r.exit_code == 2 and "no column shoe_size" in r.output
    assert not (tiny_data / "skin_tone.csv").exists()  # refused before any image was read for its tone


def test_operating_point_thresholds_follow_the_checkpoint_and_flags_follow_out(
    tiny_runs, tiny_data, tmp_path
):
    """`predict --checkpoint best_20 --operating-point` once used best's thresholds,
    and flagged.csv ignored --out."""
    from melanoma import rundir
    from melanoma.evaluation.operating_points import threshold_at, threshold_for

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    assert RUNNER.invoke(app, ["operating-points", str(run), "--bootstrap", "20"]).exit_code == 0
    with pytest.raises(FileNotFoundError, match="no out-of-fold scores of checkpoint best_20"):
        threshold_for(run, 0.95, "best_20")
    r = RUNNER.invoke(app, ["evaluate", str(run), "--data", str(tiny_data), "--checkpoint", "best_20", "--no-tta",
                            "--bootstrap", "20"])  # fmt: skip
    assert r.exit_code == 0, r.output
    oof = pd.read_csv(run / "oof_best_20.csv")
    own = threshold_at(oof.melanoma.to_numpy(), (oof.target == 6).to_numpy(), 0.95)
    assert threshold_for(run, 0.95, "best_20") == pytest.approx(own)
    best = json.loads((run / rundir.OPERATING_POINTS).read_text())["points"][-1]["threshold"]
    assert threshold_for(run, 0.95, "best") == pytest.approx(best)  # the saved point, fitted on best
    out = tmp_path / "sub.csv"
    r = RUNNER.invoke(app, ["predict", str(run), "--data", str(tiny_data), "--no-tta", "--operating-point", "0.95",
                            "--checkpoint", "best_20", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    flags = pd.read_csv(tmp_path / "sub_flagged.csv")
    assert not (run / rundir.FLAGGED).exists() and str(tmp_path / "sub_flagged.csv") in " ".join(
        r.output.split()
    )
    probs = pd.read_csv(run / rundir.TEST_PROBS).set_index("image_name").melanoma
    assert list(flags.flagged) == list(probs.loc[flags.image_name].to_numpy() >= own)


def test_each_result_reads_back_what_it_wrote(tiny_runs, tmp_path):
    """The typed results (results.py) round-trip their JSON exactly and are what every reader gets;
    a result of folds trained since is not returned, and a damaged file is one clear error."""
    from melanoma.evaluation.calibration import calibrate
    from melanoma.evaluation.operating_points import operating_points
    from melanoma.evaluation.subgroups import subgroups
    from melanoma.results import Calibration, OperatingPoints, Subgroups

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    made = [calibrate(run), operating_points(run, n_boot=20), subgroups(run, tiny_runs["table"], n_boot=20)]
    for result, kind in zip(made, (Calibration, OperatingPoints, Subgroups), strict=True):
        saved = json.loads((run / kind.FILE).read_text())
        assert kind.load(run) == result and kind.from_json(saved).to_json() == result.to_json()
        assert {k: v for k, v in saved.items() if k != "trained_state"} == json.loads(
            json.dumps(result.to_json())
        )
    ops = made[1]
    assert ops.at(0.95) is ops.points[1] and ops.at(0.5) is None
    assert list(ops.table().columns)[-1] == "biopsies per melanoma" and len(ops.table()) == 2
    assert ops.points[0].text("sensitivity").count("(") == 1  # "value (low-high)"
    (run / Calibration.FILE).write_text('{"temperature": 1.0}')
    with pytest.raises(ValueError, match="not a Calibration result"):
        Calibration.load(run)


def test_the_equity_gap_is_the_spread_of_the_groups_aucs():
    rng = np.random.default_rng(4)
    parts = []
    for tone, n, shift in [("very light (> 55)", 3000, 2.0), ("light 1 (48-55)", 2000, 1.6), ("dark (<= 10)", 1500, 0.6),
                           ("unknown", 400, 0.0)]:  # fmt: skip
        y = rng.random(n) < 0.1
        parts.append(
            pd.DataFrame({"score": rng.normal(0, 1, n) + shift * y, "is_melanoma": y, SKIN_TONE: tone})
        )
    frame = pd.concat(parts, ignore_index=True)
    table = subgroup_table(frame, (SKIN_TONE,), threshold=1.0, n_boot=100)
    assert table.group.tolist()[1:] == ["very light (> 55)", "light 1 (48-55)", "dark (<= 10)", "unknown"]
    (gap,) = equity_gaps(frame, table, threshold=1.0, n_boot=100)
    scored = table[(table.column == SKIN_TONE) & (table.group != "unknown")].set_index("group")
    assert gap["groups"] == list(scored.index) and gap["lowest"] == "dark (<= 10)"
    assert gap["highest"] == "very light (> 55)"
    assert gap["auc_gap"] == pytest.approx(scored.auc.max() - scored.auc.min())
    assert gap["sensitivity_gap"] == pytest.approx(scored.sensitivity.max() - scored.sensitivity.min())
    assert 0.15 < gap["auc_gap_low"] <= gap["auc_gap"] <= gap["auc_gap_high"] < 0.45  # ~0.92 vs ~0.66
    one = subgroup_table(frame[frame[SKIN_TONE] == "dark (<= 10)"], (SKIN_TONE,), 1.0, n_boot=20)
    assert (
        equity_gaps(frame[frame[SKIN_TONE] == "dark (<= 10)"], one, 1.0, n_boot=20) == []
    )  # one group: no gap


def test_estimated_skin_tone_against_the_generators_truth(tiny_data):
    from melanoma.inputs.skin_tone import estimate, ita_group

    truth = pd.read_csv(tiny_data / "truth" / "images.csv")
    truth = truth[truth.copy_transform.isna()]  # a copy's truth is its original's
    files = {p.stem: p for p in tiny_data.rglob("*.jpg")}
    estimated = estimate([files[n] for n in truth.image_name])
    true = truth.skin_ita.to_numpy()
    assert np.isfinite(estimated).all() and len(true) > 250
    assert true.min() < 10 < 55 < true.max()  # the generator's range: mostly light, a darker tail
    assert np.mean(true > 41) > 0.6
    assert np.corrcoef(true, estimated)[0, 1] > 0.9
    agree = ita_group(pd.Series(true)).to_numpy() == ita_group(pd.Series(estimated)).to_numpy()
    assert agree.mean() >= 0.8


def test_skin_tone_groups_in_subgroups_and_the_cache(run, tiny_data, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    r = RUNNER.invoke(app, ["subgroups", str(run), "--data", str(data), "--bootstrap", "30"])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "subgroups.json").read_text())
    groups = pd.DataFrame(saved["groups"])
    tone = groups[groups.column == SKIN_TONE]
    assert tone.images.sum() == groups.images.iloc[0] and len(tone) >= 3  # every out-of-fold image, in groups
    assert "estimated from the skin around the lesion" in saved["estimated"][SKIN_TONE]
    assert "estimated skin tone (ITA): ITA estimated" in " ".join(r.output.split())
    cache = pd.read_csv(data / "skin_tone.csv")
    assert set(pd.read_csv(run / "fold0" / "oof.csv").image_name) <= set(cache.image_name)
    import melanoma.data.skin_tone as skin_tone

    monkeypatch.setattr(skin_tone, "file_ita", lambda path: pytest.fail(f"{path} read again"))
    r = RUNNER.invoke(app, ["subgroups", str(run), "--data", str(data), "--bootstrap", "30"])
    assert r.exit_code == 0, r.output  # the cache answered
    assert json.loads((run / "subgroups.json").read_text())["groups"] == saved["groups"]
    for gap in saved["gaps"]:
        scored = groups[(groups.column == gap["column"]) & groups.auc.notna() & (groups.group != "unknown")]
        assert gap["auc_gap"] == pytest.approx(scored.auc.max() - scored.auc.min())
    card = RUNNER.invoke(app, ["card", str(run)])
    assert card.exit_code == 0 and "estimated skin tone (ITA)" in (run / "MODEL_CARD.md").read_text()


def test_isic_2024_skin_tone_comes_from_its_tbp_measurements(tiny_2024):
    from melanoma.data.ingest import ingest
    from melanoma.data.isic2024 import metadata
    from melanoma.data.skin_tone import FROM_TBP, skin_tones

    table = ingest(tiny_2024, verify="none", progress=False)
    tones, how = skin_tones(tiny_2024, table)
    meta = metadata(tiny_2024 / "isic2024").set_index("isic_id").loc[table.image_name]
    expected = np.degrees(np.arctan((meta.tbp_lv_Lext - 50) / meta.tbp_lv_Bext)).to_numpy()
    assert how == FROM_TBP and tones.to_numpy() == pytest.approx(expected)
    assert not (tiny_2024 / "skin_tone.csv").exists()  # nothing estimated, nothing written
