import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.config import TrainConfig
from melanoma.experiments.noisy_student import noisy_student, pseudo_labels
from melanoma.training.train import training_rows


def test_pseudo_labels_filter_label_and_balance():
    probs = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.8, 0.2, 0.0],
            [0.7, 0.3, 0.0],
            [0.6, 0.4, 0.0],
            [0.2, 0.8, 0.0],
            [0.5, 0.45, 0.05],
        ]
    )
    rows, labels = pseudo_labels(probs, threshold=0.55, soft=True, max_repeat=5)
    # row 5 (top 0.5) is dropped; class 0 has 4 rows, class 1 one: repeated round(4 / 1) = 4 times
    assert rows.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert labels[0] == pytest.approx(probs[0]) and labels[-1] == pytest.approx(probs[4])
    rows, labels = pseudo_labels(probs, threshold=0.55, soft=False, max_repeat=2)
    assert rows.tolist() == [0, 1, 2, 3, 4, 4]  # capped at 2 repeats
    assert labels.tolist()[:1] == [[1, 0, 0]] and labels.tolist()[-1] == [0, 1, 0]
    rows, _ = pseudo_labels(probs, threshold=0.95)
    assert len(rows) == 0


def test_one_noisy_student_iteration(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest

    cfg = TrainConfig(backbone="test_efficientnet", image_size=32, batch_size=16, num_workers=0, lr=3e-4,
                      epochs=2, folds=[0, 1], pretrained=False)  # fmt: skip
    table = training_rows(ingest(tiny_data, verify="none", progress=False), cfg)
    student = TrainConfig(**{**cfg.__dict__, "drop_path": 0.2})
    result = noisy_student(table, cfg, student, tmp_path, iterations=1, threshold=0.0, progress=False)
    assert result.role.tolist() == ["teacher", "student"]
    n_test = int((table.split == "test").sum())
    assert result.pseudo_rows[1] >= n_test  # every test image, rare classes repeated
    assert np.isfinite(result[["oof_auc", "oof_auc_20"]].to_numpy()).all()
    assert pd.read_csv(tmp_path / "noisy_student.csv").shape[0] == 2
    test_names = set(table.image_name[table.split == "test"])
    for k in (0, 1):  # pseudo-labelled test images never validate
        oof = pd.read_csv(tmp_path / "iter1" / f"fold{k}" / "oof.csv")
        assert not set(oof.image_name) & test_names
        assert len(oof) == len(pd.read_csv(tmp_path / "iter0" / f"fold{k}" / "oof.csv"))
    log = (tmp_path / "iter1" / "log.txt").read_text()
    teacher_log = (tmp_path / "iter0" / "log.txt").read_text()
    n_student = int(log.split("fold 0: ")[1].split(" train")[0])
    n_teacher = int(teacher_log.split("fold 0: ")[1].split(" train")[0])
    assert n_student == n_teacher + result.pseudo_rows[1]
    # No image confident enough: said, instead of a "student" trained on the labelled rows alone.
    with pytest.raises(ValueError, match="no unlabelled image reaches the pseudo-label threshold 1.0"):
        noisy_student(table, cfg, student, tmp_path / "z", iterations=1, threshold=1.0, progress=False)
    assert not (tmp_path / "z" / "iter1").exists()
    with pytest.raises(ValueError, match="must be as large as the teacher"):
        noisy_student(
            table,
            TrainConfig(**{**cfg.__dict__, "backbone": "tf_efficientnet_lite0"}),
            student,
            tmp_path / "y",
            progress=False,
        )
    with pytest.raises(ValueError, match="same classes"):
        noisy_student(
            table, cfg, TrainConfig(**{**cfg.__dict__, "scheme": "2c"}), tmp_path / "x", progress=False
        )


def test_noisy_student_cli(tmp_path, tiny_data):
    r = CliRunner().invoke(app, ["noisy-student", str(tiny_data), "--out", str(tmp_path / "ns"), "--preset", "demo",
                                 "--image-size", "32", "--epochs", "1", "--folds", "0", "--threshold", "0",
                                 "--hard", "--workers", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "student" in r.output and (tmp_path / "ns" / "iter1" / "fold0" / "best.safetensors").is_file()
