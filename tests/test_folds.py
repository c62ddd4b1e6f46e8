import pandas as pd
import pytest

from melanoma.folds import fold_summary, load_folds, patient_folds, save_folds
from melanoma.ingest import ingest


@pytest.fixture(scope="module")
def table(tiny_data):
    return ingest(tiny_data, verify="none", progress=False)


def test_no_patient_in_two_folds_and_every_train_row_has_a_fold(table):
    fold = patient_folds(table, k=5, seed=0)
    train = table.split == "train"
    assert set(fold[train]) == {0, 1, 2, 3, 4}
    assert (fold[~train] == -1).all()
    per_patient = table[train].assign(fold=fold).groupby("patient_id").fold.nunique()
    assert per_patient.max() == 1


def test_melanoma_and_2019_spread_over_folds(table):
    t = table.assign(fold=patient_folds(table, k=3, seed=0))
    summary = fold_summary(t)
    assert (summary.melanoma >= 1).all()
    assert summary.isic2019_share.max() - summary.isic2019_share.min() < 0.15


def test_deterministic_by_seed(table):
    assert patient_folds(table, seed=4).equals(patient_folds(table, seed=4))
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
