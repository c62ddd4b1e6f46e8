import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melanoma.data.folds import (
    fold_summary,
    load_folds,
    make_folds,
    patient_folds,
    published_folds,
    save_folds,
)
from melanoma.data.ingest import ingest


@pytest.fixture(scope="module")
def table(tiny_data):
    return ingest(tiny_data, verify="none", progress=False)


def random_table(seed: int, n_2020: int, n_2019: int, rate: float = 0.018, n_groups: int = 0) -> tuple:
    """Patients with log-normal image counts (as ISIC 2020), 2019 rows by class, duplicate groups."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n_2020:
        sizes.append(int(np.clip(np.ceil(rng.lognormal(2.4, 0.9)), 1, 115)))
    patient = np.repeat([f"IP_{i}" for i in range(len(sizes))], sizes)[:n_2020]
    diag = np.where(
        rng.random(n_2020) < rate, "melanoma", rng.choice(["unknown", "nevus"], n_2020, p=[0.85, 0.15])
    )
    codes = rng.choice(["melanoma", "nevus", "BCC", "BKL", "AK", "SCC", "VASC", "DF"], n_2019,
                       p=[0.18, 0.5, 0.13, 0.1, 0.04, 0.03, 0.01, 0.01])  # fmt: skip
    table = pd.DataFrame(
        {
            "image_name": [f"I{i}" for i in range(n_2020 + n_2019)],
            "patient_id": list(patient) + [pd.NA] * n_2019,
            "split": "train",
            "is_ext": [0] * n_2020 + [1] * n_2019,
            "diagnosis": list(diag) + list(codes),
        }
    )
    # Duplicate groups as found in ISIC: a 2020 image that is also in 2019, or two 2019 images.
    n_groups = min(n_groups, n_2019)
    first = rng.choice(n_2020 + n_2019, size=n_groups, replace=False) if n_groups else []
    second = n_2020 + rng.choice(n_2019, size=len(first), replace=False) if len(first) else []
    groups = pd.Series(
        {table.image_name[m]: g for g, pair in enumerate(zip(first, second, strict=True)) for m in set(pair)},
        dtype=object,
    )
    return table, groups


def test_triple_stratified_on_5000_2020_images():
    table, groups = random_table(0, 5500, 2500, n_groups=40)
    fold = patient_folds(table, k=5, seed=0, groups=groups)
    t = table.assign(fold=fold)
    assert set(fold) == {0, 1, 2, 3, 4}
    assert t.dropna(subset=["patient_id"]).groupby("patient_id").fold.nunique().max() == 1
    summary = fold_summary(t)
    overall = (t[t.is_ext == 0].diagnosis == "melanoma").mean()
    assert (summary.melanoma_rate_2020 - overall).abs().max() < 0.005  # within 0.5 percentage points
    # Patients with few and with many images are spread evenly.
    assert summary.patient_median.max() - summary.patient_median.min() <= 2
    assert summary.patient_q90.max() / summary.patient_q90.min() < 1.35
    assert summary.patients.max() - summary.patients.min() <= 0.1 * summary.patients.mean()
    # 2019 rows stratified by class.
    per_class = pd.crosstab(t[t.is_ext == 1].fold, t[t.is_ext == 1].diagnosis)
    assert (per_class.max() - per_class.min() <= 3).all()
    # A duplicate group never straddles two folds.
    assert t.set_index("image_name").fold.loc[groups.index].groupby(groups.to_numpy()).nunique().max() == 1


@settings(max_examples=40, deadline=None, derandomize=True)  # the same examples on every run
@given(
    seed=st.integers(0, 10_000),
    n_2020=st.integers(60, 600),
    n_2019=st.integers(0, 300),
    k=st.integers(2, 6),
    n_groups=st.integers(0, 8),
)
def test_fold_properties_hold_for_any_table(seed, n_2020, n_2019, k, n_groups):
    table, groups = random_table(seed, n_2020, n_2019, rate=0.05, n_groups=n_groups)
    fold = patient_folds(table, k=k, seed=seed, groups=groups)
    t = table.assign(fold=fold)
    assert fold.between(0, k - 1).all()
    assert t.dropna(subset=["patient_id"]).groupby("patient_id").fold.nunique().max() == 1
    if len(groups):
        assert (
            t.set_index("image_name").fold.loc[groups.index].groupby(groups.to_numpy()).nunique().max() == 1
        )
    mel = t[t.diagnosis == "melanoma"].groupby("fold").size().reindex(range(k), fill_value=0)
    per_unit = t[t.diagnosis == "melanoma"].groupby(t.patient_id.fillna(t.image_name)).size()
    big_unit = int(per_unit.max()) if len(per_unit) else 0
    assert mel.max() - mel.min() <= max(big_unit, 1) + 3  # groups may tie several melanomas together
    assert patient_folds(table, k=k, seed=seed, groups=groups).equals(fold)  # deterministic


def test_tiny_generator_data_and_seed(table):
    fold = patient_folds(table, k=5, seed=0)
    train = table.split == "train"
    assert set(fold[train]) == {0, 1, 2, 3, 4} and (fold[~train] == -1).all()
    assert table[train].assign(fold=fold).groupby("patient_id").fold.nunique().max() == 1
    assert not patient_folds(table, seed=4).equals(patient_folds(table, seed=5))


def test_save_and_load_round_trip(table, tmp_path):
    t = table.assign(fold=patient_folds(table))
    path = save_folds(t, tmp_path / "folds.csv")
    assert load_folds(table, path).equals(t.fold)
    pd.read_csv(path).iloc[3:].to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"3 train image\(s\) have no fold"):
        load_folds(table, path)


def test_rows_marked_as_duplicates_are_left_out(table):
    marked = table.copy()
    marked["tfrecord"] = pd.array([3] * len(table), dtype="Int64")
    drop = marked.index[marked.split == "train"][:7]
    marked.loc[drop, "tfrecord"] = -1  # as the pre-resized CSVs mark the winners' duplicates
    fold = patient_folds(marked, k=5, seed=0)
    assert (fold[drop] == -1).all()
    assert (fold[marked.split == "train"].drop(drop) >= 0).all()
    assert fold_summary(marked.assign(fold=fold)).loc[-1, "images"] == 7


def test_published_fold_maps():
    t = pd.DataFrame(
        {
            "split": ["train"] * 6 + ["test"],
            "is_ext": [0, 0, 0, 1, 1, 0, 0],
            "tfrecord": pd.array([2, 10, 14, 17, 29, -1, 3], dtype="Int64"),
        }
    )
    assert published_folds(t, "default").tolist() == [0, 1, 4, 2, 4, -1, -1]
    assert published_folds(t, "oldfold").tolist() == [2, 0, 4, 2, 4, -1, -1]
    # newfold: (tfrecord % 15) through the newfold map, for 2020 and 2019 rows alike.
    assert published_folds(t, "newfold").tolist() == [4, 2, 4, 4, 4, -1, -1]
    assert make_folds(t, "default").equals(published_folds(t, "default"))
    with pytest.raises(ValueError, match="needs the tfrecord column"):
        published_folds(t.assign(tfrecord=pd.array([pd.NA] * 7, dtype="Int64")), "default")
    with pytest.raises(ValueError, match="unknown fold map 'best'"):
        published_folds(t, "best")


def test_an_image_in_several_groups_ties_them_all(table):
    train = table[table.split == "train"]
    a, b, c = train.image_name.iloc[[0, 40, 80]]
    groups = pd.Series([1, 1, 2, 2], index=[a, b, b, c])  # b is in both groups
    fold = patient_folds(table, k=5, seed=0, groups=groups).set_axis(table.image_name)
    assert fold[a] == fold[b] == fold[c]


def test_the_fold_contract():
    from melanoma.data.folds import fold_rows

    table = pd.DataFrame({
        "split": ["train"] * 6 + ["test"],
        "fold": [0, 0, 1, 1, -1, 2, -1],
        "pseudo": [False, False, False, False, False, False, False],
    })  # fmt: skip
    fit, val = fold_rows(table, 0)
    assert fit.tolist() == [2, 3, 5] and val.tolist() == [0, 1]  # -1 and test rows: neither
    table.loc[5, "pseudo"] = True  # a pseudo-labelled copy trains every fold, validates none
    for fold in (0, 1, 2):
        fit, val = fold_rows(table, fold)
        assert 5 in fit and 5 not in val and 4 not in fit and 6 not in fit
    assert fold_rows(table, 2)[1].tolist() == []
    fit, val = fold_rows(table.drop(columns="pseudo"), 1)  # no pseudo column: none
    assert fit.tolist() == [0, 1, 5] and val.tolist() == [2, 3]
