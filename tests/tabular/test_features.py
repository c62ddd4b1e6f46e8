"""The ISIC 2024 feature groups on hand-made rows, switching them off by name, and the guard that
no train-only column reaches any feature."""

import numpy as np
import pandas as pd
import pytest

from melanoma.data.formats import COLUMNS_2024_TEST, TRAIN_ONLY_2024
from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024
from melanoma.tabular.features import EPS, GROUPS, build_features, image_context, kept_groups


def _rows() -> pd.DataFrame:
    """Two patients: a has four lesions (three on the back, one on the arm), b has three."""
    meta = pd.DataFrame({c: 1.0 for c in COLUMNS_2024_TEST}, index=range(7))
    meta["patient_id"] = ["a", "a", "a", "a", "b", "b", "b"]
    meta["tbp_lv_location"] = ["back", "back", "back", "arm", "back", "back", "back"]
    meta["tbp_lv_location_simple"] = meta.tbp_lv_location
    meta["anatom_site_general"] = ["posterior torso"] * 3 + ["upper extremity"] + ["posterior torso"] * 3
    meta["attribution"] = ["c1", "c1", "c1", "c1", "c2", "c2", "c2"]
    for c in ("sex", "tbp_tile_type"):
        meta[c] = "x"
    meta["tbp_lv_areaMM2"] = [1.0, 2.0, 3.0, 10.0, 4.0, 4.0, 40.0]
    return meta


def test_each_group_by_hand():
    f = build_features(_rows())
    # within patient x location: a's three back lesions among themselves, the arm lesion alone
    assert f.tbp_lv_areaMM2_loc_z.iloc[:3].tolist() == pytest.approx([-1, 0, 1], abs=1e-4)
    assert np.isnan(f.tbp_lv_areaMM2_loc_z.iloc[3])  # a neighbourhood of one has no spread
    # within the centre: c2's areas 4, 4, 40 (mean 16, std 20.78)
    assert f.tbp_lv_areaMM2_centre_z.iloc[4:].tolist() == pytest.approx([-0.5774, -0.5774, 1.1547], abs=1e-4)
    assert f.tbp_lv_areaMM2_patient_rank.iloc[:4].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert f.tbp_lv_areaMM2_patient_rank.iloc[4:].tolist() == pytest.approx([1.5 / 3, 1.5 / 3, 1.0])
    # the ugly duckling: of b's numbers only the area (and the ratios made of it) vary; lesion 6
    # has |z| 1.1547 on each, lesions 4 and 5 |z| 0.5774
    z = f.filter(like="_patient_z").iloc[6].abs()
    assert f.ud_patient_max.iloc[6] == pytest.approx(z.max()) and f.ud_patient_count2.iloc[6] == (z > 2).sum()
    assert f.ud_patient_std.iloc[6] == pytest.approx(z.std())
    assert f.patient_lof.notna().all()  # every patient has three lesions or more
    assert f.color_uniformity.iloc[0] == pytest.approx(1.0 / (1.0 + 1e-5)) and EPS == 1e-5  # the top teams'


def test_the_outlier_score_finds_the_lesion_unlike_its_patients_others():
    from melanoma.tabular.features import local_outlier

    rng = np.random.default_rng(0)
    values = pd.DataFrame(rng.normal(0, 1, (30, 4)), columns=list("abcd"))
    values.iloc[7] = [6.0, -6.0, 6.0, 6.0]  # patient p's odd one out
    patient = pd.Series(["p"] * 15 + ["q"] * 13 + ["r"] * 2)
    lof = local_outlier(values, patient)
    assert lof.iloc[:15].idxmax() == 7 and lof.iloc[7] > 2 and lof.iloc[:7].between(0.8, 1.6).all()
    assert lof.iloc[28:].isna().all()  # a patient of two lesions has no neighbourhood to compare with


def test_groups_switch_off_by_name():
    meta = _rows()
    everything = set(build_features(meta).columns)
    suffix = {"neighbourhood": ("_loc_z", "_locsimple_z", "_site_z"), "centre": ("_centre_z",),
              "ranks": ("_patient_rank",), "outlier": ("patient_lof",), "ugly_duckling": ("ud_",)}  # fmt: skip
    for group, marks in suffix.items():
        left = set(build_features(meta, drop=[f"group:{group}"]).columns)
        gone = everything - left
        assert gone and all(any(m in c for m in marks) for c in gone), group
    no_ratios = set(build_features(meta, drop=["group:ratios"]).columns)
    assert "lesion_size_ratio" not in no_ratios and "lesion_size_ratio_patient_z" not in no_ratios
    no_raw = build_features(meta, drop=["group:raw"])
    assert "tbp_lv_areaMM2" not in no_raw and "sex" not in no_raw and "tbp_lv_areaMM2_patient_z" in no_raw
    assert "lesion_size_ratio" in no_raw  # the ratios are a group of their own
    with pytest.raises(ValueError, match="group:shape: no such feature group; the groups are raw, ratios"):
        build_features(meta, drop=["group:shape"])
    from melanoma.tabular.gbdt import GbdtConfig

    with pytest.raises(ValueError, match="group:ranks: every group is on by default"):
        GbdtConfig(features=["group:ranks"])
    assert kept_groups([], patient_stats=False) == {"raw", "ratios", "centre"}
    assert set(GROUPS) == kept_groups([])


def test_image_scores_in_context():
    meta = _rows()
    scores = {"image_score": np.array([0.1, 0.1, 0.1, 0.5, 0.2, 0.2, 0.8]), "image2_score": np.full(7, 0.3)}
    f = image_context(meta, scores, GROUPS)
    assert f.image_score_patient_ratio.iloc[3] == pytest.approx(0.5 / (0.2 + EPS))
    assert f.image_score_patient_z.iloc[6] == pytest.approx(1.1547, abs=1e-4)
    assert f.image_score_spread.iloc[3] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert {"image_score_centre_z", "image_score_loc_z", "image_score_age_z"} <= set(f.columns)
    assert list(image_context(meta, scores, ["raw"]).columns) == ["image_score", "image2_score"]


def test_no_train_only_column_reaches_any_feature(tmp_path):
    """Every train-only column (the label, the diagnosis, what comes after it) scrambled, or made
    a copy of the label: not one feature of any group changes."""
    from melanoma.data.isic2024 import metadata

    generate_2024(
        tmp_path, Synth2024Config(n_train=400, n_test=5, malignant_rate=0.05, indeterminate_rate=0.05)
    )
    meta = metadata(tmp_path / "isic2024")
    scores = {"image_score": np.linspace(0, 1, len(meta))}
    before = pd.concat([build_features(meta), image_context(meta, scores, GROUPS)], axis=1)
    assert not set(before.columns) & set(TRAIN_ONLY_2024)
    rng = np.random.default_rng(0)
    for leak in ("scramble", "label"):
        changed = meta.copy()
        for column in TRAIN_ONLY_2024:
            values = changed[column].to_numpy()
            changed[column] = (
                values[rng.permutation(len(meta))] if leak == "scramble" else meta.target.to_numpy()
            )
        after = pd.concat([build_features(changed), image_context(changed, scores, GROUPS)], axis=1)
        pd.testing.assert_frame_equal(after, before)
