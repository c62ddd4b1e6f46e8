import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.evaluation.predict import SubmissionError, validate_submission, write_submission

NAMES = pd.Series(["ISIC_1", "ISIC_2", "ISIC_3"])


def test_valid_submission_is_written(tmp_path):
    sub = pd.DataFrame({"image_name": ["ISIC_3", "ISIC_1", "ISIC_2"], "target": [0.0, 1.0, 0.5]})
    path = write_submission(sub, NAMES, tmp_path / "sub.csv")
    assert path.read_text().splitlines() == ["image_name,target", "ISIC_3,0.0", "ISIC_1,1.0", "ISIC_2,0.5"]


@pytest.mark.parametrize(
    "names, target, message",
    [
        (["ISIC_1", "ISIC_1", "ISIC_2", "ISIC_3"], [0.1] * 4, r"1 repeated image\(s\), e.g. ISIC_1"),
        (["ISIC_1", "ISIC_2"], [0.1, 0.2], r"1 test image\(s\) missing, e.g. ISIC_3"),
        (
            ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_9"],
            [0.1] * 4,
            r"1 image\(s\) not in the test set, e.g. ISIC_9",
        ),
        (["ISIC_1", "ISIC_2", "ISIC_3"], [0.1, np.nan, 0.2], r"1 NaN or non-numeric target"),
        (["ISIC_1", "ISIC_2", "ISIC_3"], [0.1, 1.2, -0.1], r"2 target\(s\) outside \[0, 1\]"),
    ],
)
def test_invalid_submissions_are_refused_and_not_written(tmp_path, names, target, message):
    sub = pd.DataFrame({"image_name": names, "target": target})
    with pytest.raises(SubmissionError, match=message):
        write_submission(sub, NAMES, tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


def test_columns_must_be_exact():
    with pytest.raises(SubmissionError, match="columns must be image_name,target"):
        validate_submission(pd.DataFrame({"image": NAMES, "target": 0.1}), NAMES)


def test_the_8_orientations_are_the_dihedral_group():
    from melanoma.models.inference import dihedral_views

    x = torch.arange(16.0).view(1, 1, 4, 4)  # no symmetry: every orientation looks different
    views = dihedral_views(x)
    keys = [tuple(v.flatten().tolist()) for v in views]
    assert len(views) == 8 and len(set(keys)) == 8 and keys[0] == tuple(x.flatten().tolist())
    # Closed under composition: applying any orientation to any orientation gives one of the 8.
    for v in views:
        assert {tuple(w.flatten().tolist()) for w in dihedral_views(v)} == set(keys)
    # Exactly the group D4: the 4 rotations and the 4 reflections of the square.
    rotations = {tuple(torch.rot90(x, k, (2, 3)).flatten().tolist()) for k in range(4)}
    reflections = {tuple(torch.rot90(x.flip(3), k, (2, 3)).flatten().tolist()) for k in range(4)}
    assert set(keys) == rotations | reflections


class CornerModel(torch.nn.Module):
    """Logits [top-left pixel, 0]: its output depends on the orientation in a known way."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 2)  # predict_tta reads fc.out_features
        self.calls = []

    def forward(self, image, meta=None):
        self.calls.append(len(image))
        return torch.stack([image[:, 0, 0, 0], torch.zeros(len(image))], dim=1)


def test_tta_averages_softmax_over_the_orientations_in_one_pass():
    from torch.utils.data import DataLoader

    from melanoma.models.inference import predict_probs

    images = torch.zeros(3, 3, 5, 5)
    corners = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 2.0]])
    for i, (a, b, c, d) in enumerate(corners):
        images[i, 0, 0, 0], images[i, 0, 0, -1], images[i, 0, -1, 0], images[i, 0, -1, -1] = a, b, c, d
    loader = DataLoader([{"image": im, "target": torch.tensor(0)} for im in images], batch_size=3)
    model = CornerModel()
    got = predict_probs(model, loader, torch.device("cpu"), tta=True, progress=False)
    # The 8 orientations bring each corner to the top left twice: the mean of their softmaxes.
    expected = torch.sigmoid(corners).mean(1)  # softmax([v, 0])[0] = sigmoid(v)
    assert got[:, 0] == pytest.approx(expected.numpy(), abs=1e-6)
    assert got.sum(1) == pytest.approx(np.ones(3))
    assert model.calls == [24]  # one forward pass of 8 x 3 images
    plain = predict_probs(model, loader, torch.device("cpu"), tta=False, progress=False)
    assert plain[:, 0] == pytest.approx(torch.sigmoid(corners[:, 0]).numpy(), abs=1e-6)


def test_predict_test_with_tta_and_checkpoints(tiny_runs):
    from melanoma.evaluation.predict import predict_test, to_submission

    run, table = tiny_runs["plain"], tiny_runs["table"]
    pred = predict_test(run, table, "final", tta=True, progress=False)
    n_test = int((table.split == "test").sum())
    assert len(pred.probs) == n_test and len(pred.by_fold) == 2 * n_test
    assert pred.probs.iloc[:, 1:].sum(axis=1).to_numpy() == pytest.approx(np.ones(n_test), abs=1e-5)
    fold_mean = pred.by_fold.groupby("image_name").melanoma.mean()
    assert pred.probs.set_index("image_name").melanoma.to_numpy() == pytest.approx(
        fold_mean.loc[pred.probs.image_name].to_numpy()
    )
    no_tta = predict_test(run, table, "last", tta=False, progress=False)
    assert not np.allclose(no_tta.probs.melanoma, pred.probs.melanoma)  # the orientations matter
    sub = to_submission(pred.probs, run)
    assert list(sub.columns) == ["image_name", "target"] and sub.target.between(0, 1).all()
    with pytest.raises(ValueError, match="unknown checkpoint 'worst'"):
        predict_test(run, table, "worst", progress=False)


def test_predict_a_folder_of_images_with_and_without_metadata(tiny_runs, tmp_path):
    import shutil

    from melanoma.data.checks import DataError
    from melanoma.evaluation.predict import predict_images

    table = tiny_runs["table"]
    test = table[table.split == "test"].head(5)
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in test.image_path:
        shutil.copy(p, folder)
    out = predict_images(tiny_runs["plain"], [folder], progress=False)
    assert list(out.image_name) == sorted(test.image_name)
    assert out.melanoma.between(0, 1).all() and set(out.predicted) <= {
        "AK",
        "BCC",
        "BKL",
        "DF",
        "SCC",
        "VASC",
        "melanoma",
        "nevus",
        "unknown",
    }
    meta_csv = tmp_path / "meta.csv"
    raw = test.rename(columns={"anatom_site": "anatom_site_general_challenge"})
    raw[["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]].to_csv(
        meta_csv, index=False
    )
    with_meta = predict_images(tiny_runs["meta"], [folder], meta_csv, progress=False)
    without = predict_images(tiny_runs["meta"], [folder], None, progress=False)
    assert not np.allclose(with_meta.melanoma, without.melanoma)  # the metadata is used
    one = predict_images(tiny_runs["plain"], [next(folder.iterdir())], progress=False)
    assert len(one) == 1
    with pytest.raises(DataError, match="no such image file or folder"):
        predict_images(tiny_runs["plain"], [tmp_path / "nope.jpg"], progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge\nx,p,robot,40,torso\n")
    with pytest.raises(DataError, match="bad.csv: 1 row"):
        predict_images(tiny_runs["plain"], [folder], bad, progress=False)


def test_a_broken_run_is_one_clear_line(tiny_runs, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from melanoma.cli import app
    from melanoma.models.weights import WeightsError
    from melanoma.rundir import load_config, load_fold_model

    runner = CliRunner()
    # config.json unreadable, or of the wrong shape: the file is named.
    for text, message in [("{not json", "not readable as a run's config"), ("[1, 2]", "expected a JSON object"),
                          ('{"epochs": "many"}', "not a valid run config")]:  # fmt: skip
        run = tmp_path / f"cfg{len(text)}"
        shutil.copytree(tiny_runs["plain"], run)
        (run / "config.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(run)
        r = runner.invoke(app, ["export", str(run)])
        assert r.exit_code == 2 and "config.json" in r.output and "Traceback" not in r.output, r.output
    # Weights of another backbone, or not safetensors at all: the file and the mismatch are named.
    run = tmp_path / "weights"
    shutil.copytree(tiny_runs["plain"], run)
    shutil.copy(tiny_runs["meta"] / "fold0" / "best.safetensors", run / "fold0" / "best.safetensors")
    with pytest.raises(
        WeightsError,
        match=r"fold0/best.safetensors: these weights do not fit the network \(size mismatch for fc.weight",
    ):
        load_fold_model(run, 0)
    (run / "fold1" / "best.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"fold1/best.safetensors: not readable as safetensors"):
        load_fold_model(run, 1)
    r = runner.invoke(app, ["predict", str(run), "--images", str(tiny_runs["table"].image_path.iloc[0])])
    assert r.exit_code == 2 and "safetensors" in r.output and "Traceback" not in r.output, r.output
    from safetensors.torch import load_file, save_file

    tensors = load_file(tiny_runs["plain"] / "fold1" / "best.safetensors")
    tensors.pop("fc.bias")
    save_file(tensors, str(run / "fold1" / "best.safetensors"))
    with pytest.raises(
        WeightsError, match=r"another network's: 1 tensor\(s\) missing \(e.g. fc.bias\), 0 unexpected"
    ):
        load_fold_model(run, 1)
