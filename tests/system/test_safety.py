"""Nothing silent, nothing lost: outputs never destroy input or unrelated files, and
faults are one clear line and a non-zero exit, with nothing half-written left behind."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from melanoma.cli import one_line
from melanoma.config import TrainConfig
from tests.helpers import cli, digest, refused

TINY_TRAIN = [
    "--backbone", "test_efficientnet", "--image-size", "32", "--batch-size", "16", "--workers", "0",
    "--lr", "3e-4", "--no-pretrained", "--folds", "0",
]  # fmt: skip


@pytest.fixture()
def data(tiny_data, tmp_path) -> Path:
    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


def test_outputs_never_write_over_the_input_data(data, tiny_runs, tmp_path):
    before = digest(data)
    train_csv = data / "isic2020" / "train.csv"
    image = next((data / "isic2020" / "jpeg" / "test").glob("*.jpg"))
    for args in [
        ("ingest", data, "--verify", "none", "--out", train_csv, "--force"),
        ("ingest", data, "--verify", "none", "--out", data / "isic2020" / "jpeg" / "train" / "t.csv"),
        ("predict", tiny_runs["plain"], "--data", data, "--out", train_csv, "--force", "--no-tta"),
        ("predict", tiny_runs["plain"], "--images", image.parent, "--out", image, "--force", "--no-tta"),
        ("train", data, "--out", data, *TINY_TRAIN),  # a run directory must not be the data folder
        ("train", data, "--out", data / "isic2020", *TINY_TRAIN),
    ]:
        refused(*cli(*args), "would write over the input data")
    assert digest(data) == before
    assert not (data / "config.json").exists()


def test_an_existing_file_is_overwritten_only_when_told(data, tmp_path):
    out = tmp_path / "new" / "folder" / "table.csv"  # a missing folder is made
    assert cli("ingest", data, "--verify", "none", "--out", out)[0] == 0
    out.write_text("the user's own notes\n")
    refused(*cli("ingest", data, "--verify", "none", "--out", out), f"{out} exists; pass --force")
    assert out.read_text() == "the user's own notes\n"
    assert cli("ingest", data, "--verify", "none", "--out", out, "--force")[0] == 0
    assert len(pd.read_csv(out)) == 294  # 150 + 40 + 90 images and 14 planted duplicates
    refused(*cli("ingest", data, "--verify", "none", "--out", tmp_path), "is a folder; a file name is wanted")
    # ensemble: a member is input; an existing --out needs --force
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for path, scores in [(a, [0.1, 0.9]), (b, [0.2, 0.8])]:
        pd.DataFrame({"image_name": ["x", "y"], "target": scores}).to_csv(path, index=False)
    refused(*cli("ensemble", a, b, "--out", a, "--force"), "would write over the input data")
    assert cli("ensemble", a, b, "--out", tmp_path / "e.csv")[0] == 0
    refused(*cli("ensemble", a, b, "--out", tmp_path / "e.csv"), "exists; pass --force")
    # a run directory that is a file
    (tmp_path / "run").write_text("not a folder")
    refused(*cli("train", data, "--out", tmp_path / "run", *TINY_TRAIN), "is a file; a folder is wanted")


def test_synth_and_prepare_do_not_replace_data_they_did_not_write(data, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(data / "isic2020", real / "isic2020")  # a download: no truth/ folder
    before = digest(real)
    refused(*cli("synth", real, "--n-train", 40, "--n-test", 20, "--n-2019", 20), "synth did not write")
    assert digest(real) == before
    again = cli("synth", data, "--n-train", 40, "--n-test", 20, "--n-2019", 20)  # its own output
    assert again[0] == 0, again[1]
    # prepare into a folder holding someone's pre-resized copy
    theirs = tmp_path / "out" / "jpeg-melanoma-32x32"
    theirs.mkdir(parents=True)
    (theirs / "train.csv").write_text("image_name,target\nISIC_1,0\n")
    refused(*cli("prepare", data, tmp_path / "out", "--sizes", 32, "--workers", 1), "prepare did not write")
    assert (theirs / "train.csv").read_text() == "image_name,target\nISIC_1,0\n"
    assert cli("prepare", data, tmp_path / "mine", "--sizes", 32, "--workers", 1)[0] == 0
    assert cli("prepare", data, tmp_path / "mine", "--sizes", 32, "--workers", 1)[0] == 0  # its own: resumes


def test_a_full_disk_in_prepare_stops_it_and_lists_nothing_as_unreadable(data, tmp_path, monkeypatch):
    from PIL import Image

    out = tmp_path / "prepared"
    assert cli("prepare", data, out, "--sizes", 32, "--workers", 1)[0] == 0
    report = (out / "prepare_report.csv").read_bytes()
    shutil.rmtree(out / "jpeg-melanoma-32x32" / "train")  # so some work is left to do
    written = []
    save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if len(written) == 5:
            Path(fp).write_bytes(b"\xff\xd8 half a JPEG")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))
        written.append(fp)
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    refused(*cli("prepare", data, out, "--sizes", 32, "--workers", 1), "No space left on device")
    assert (out / "prepare_report.csv").read_bytes() == report  # not emptied, nothing listed
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.part"))
    assert len(list((out / "jpeg-melanoma-32x32" / "train").glob("*.jpg"))) == 5  # whole files only


def test_a_full_disk_or_a_read_only_folder_in_training_is_one_line(data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from melanoma.models import checkpoint

    run = tmp_path / "run"
    save_file = checkpoint.save_file
    calls = []

    def fails_on_the_second_epoch(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 3:  # epoch 1 wrote last, best and best_20
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", fails_on_the_second_epoch)
    code, output = cli("train", data, "--out", run, "--epochs", 2, *TINY_TRAIN)
    refused(code, output, "No space left on device", "last.safetensors.tmp")
    assert not list(run.rglob("*.tmp"))  # the epoch-1 files are intact, no half file left
    assert load_file(run / "fold0" / "last.safetensors")  # epoch 1's, whole
    monkeypatch.undo()
    # a folder that cannot be written (as root, chmod cannot show it: the error is simulated)
    real_replace = os.replace

    def read_only(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr("melanoma.fileio.os.replace", read_only)
    code, output = cli("ingest", data, "--verify", "none", "--out", tmp_path / "t.csv")
    refused(code, output, f"{tmp_path / 't.csv'}: Permission denied")
    monkeypatch.setattr("melanoma.fileio.os.replace", real_replace)
    assert not list(tmp_path.glob("t.csv*"))


def test_a_tiny_image_and_a_folds_file_of_another_k_are_refused_before_any_work(data, tmp_path):
    from PIL import Image

    image = next((data / "isic2020" / "jpeg" / "train").glob("*.jpg"))
    Image.new("RGB", (1, 1)).save(image)
    run = tmp_path / "run"
    refused(*cli("train", data, "--out", run, *TINY_TRAIN), str(image), "1x1 pixels")
    assert not run.exists()
    shutil.copy(next(p for p in image.parent.glob("*.jpg") if p != image), image)
    assert cli("folds", data, "--k", 3)[0] == 0
    # without --k-folds the run takes the file's 3 (tests/system/test_end_to_end.py trains that way)
    refused(
        *cli("train", data, "--out", run, "--k-folds", 5, *TINY_TRAIN),
        "into 3 folds",
        "asks for 5",
        "--k-folds 3",
    )
    assert not run.exists()


def test_a_validation_fold_without_melanoma_says_so_and_keeps_the_lowest_loss(tiny_data, tmp_path):
    from melanoma.data.ingest import ingest
    from melanoma.training.train import selection_score, train, training_rows

    cfg = TrainConfig(
        out=str(tmp_path), epochs=3, backbone="test_efficientnet", image_size=32, batch_size=16,
        num_workers=0, lr=1e-3, pretrained=False, folds=[0],
    )  # fmt: skip
    table = training_rows(ingest(tiny_data, verify="none", progress=False), cfg)
    gone = (table.fold == 0) & (table.target == 6)
    table.loc[gone, "target"] = 5  # fold 0 validates without a melanoma: AUC undefined there
    table.loc[gone, "diagnosis"] = "nevus"
    metrics = train(table, cfg, progress=False)
    assert metrics.auc.isna().all()
    log = (tmp_path / "log.txt").read_text()
    assert "fold 0: the validation rows hold no melanoma, so AUC is undefined for this fold" in log
    assert "its best checkpoint is the epoch with the lowest validation loss" in log
    best = _val_loss(tmp_path, table, "best")
    assert best == pytest.approx(metrics.val_loss.min(), rel=1e-5)
    assert selection_score({"auc": float("nan"), "val_loss": 0.3}, "auc", False) == -0.3
    assert selection_score({"auc": 0.8, "val_loss": 0.3}, "auc", True) == 0.8


def _val_loss(run: Path, table: pd.DataFrame, checkpoint: str) -> float:
    import torch
    from torch.utils.data import DataLoader

    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.transforms import eval_transform
    from melanoma.metrics import validation_metrics
    from melanoma.models.inference import predict_probs
    from melanoma.models.model import build_model, load_weights
    from melanoma.rundir import load_config

    cfg = load_config(run)
    rows = table[(table.fold == 0) & (table.split == "train")]
    model = load_weights(build_model(cfg, 0), run / "fold0" / f"{checkpoint}.safetensors")
    loader = DataLoader(LesionDataset(rows, eval_transform(cfg.image_size)), 64)
    probs = predict_probs(model, loader, torch.device("cpu"), "", progress=False)
    return validation_metrics(probs, rows.target.to_numpy(), rows.is_ext.to_numpy(), 6)["val_loss"]


def test_errors_from_loader_workers_and_the_system_are_one_line():
    from melanoma.inputs.decode import ImageError

    wrapped = ImageError(
        "Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise\nmelanoma.inputs.decode.ImageError: a.jpg: truncated or damaged\n'
    )
    assert one_line(wrapped) == "a.jpg: truncated or damaged"
    assert (
        one_line(OSError(errno.ENOSPC, "No space left on device", "/r/x")) == "/r/x: No space left on device"
    )
    assert one_line(ValueError("two\nlines")) == "two lines"


def test_ctrl_c_during_training_says_how_to_resume(data, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "melanoma", "train", str(data), "--out", str(run), "--epochs", "4"]
    proc = subprocess.Popen(
        command + TINY_TRAIN, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run / "fold0" / "state.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    output = " ".join(proc.communicate(timeout=60)[0].split())
    assert proc.returncode == 130, output
    assert "interrupted: the finished epochs are saved in" in output and "--resume" in output, output
    assert "Traceback" not in output and not list(run.rglob("*.tmp"))
    code, output = cli("train", data, "--out", run, "--epochs", 4, "--resume", *TINY_TRAIN)
    assert code == 0, output  # the lock went with the process; the fold goes on from its last epoch
    assert "fold 0: resuming after epoch" in output
    assert list(pd.read_csv(run / "metrics.csv").epoch) == [1, 2, 3, 4]
