import time

import pytest

from melanoma.inputs import loader
from melanoma.inputs.loader import Timed, auto_workers, batch_bytes, fit_workers


def test_auto_workers(monkeypatch):
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert auto_workers(3) == 3 and auto_workers(0) == 0
    assert auto_workers(-1) == 8  # 15 spare cores, at most 8
    assert auto_workers(-1, processes_per_node=4) == 3  # 15 cores shared by 4 processes
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert auto_workers(-1) == 0


def test_small_shared_memory_lowers_the_workers_with_advice(monkeypatch, capsys):
    per_worker = 2 * loader.PREFETCH * batch_bytes(64, 384)
    monkeypatch.setattr(loader, "shm_free", lambda path=loader.SHM: int(2.5 * per_worker))
    assert fit_workers(6, 64, 384) == 2
    said = capsys.readouterr().err
    assert "6 data-loader workers" in said and "Using 2 worker(s)" in said and "--shm-size" in said
    assert fit_workers(2, 64, 384) == 2  # fits: unchanged, silent
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(loader, "shm_free", lambda path=loader.SHM: 10 * 2**20)  # Docker-like 10 MiB
    assert fit_workers(4, 64, 384) == 0
    assert "loading in the main process" in capsys.readouterr().err
    monkeypatch.setattr(loader, "shm_free", lambda path=loader.SHM: None)  # no /dev/shm at all
    assert fit_workers(4, 64, 384) == 4


def test_shared_memory_is_measured():
    free = loader.shm_free()
    assert free is None or free > 0
    assert loader.shm_free(loader.Path("/no/such/dir")) is None


def _slow_items(n, seconds):
    for i in range(n):
        time.sleep(seconds)
        yield i


def test_time_waiting_for_data_is_accounted():
    starved = Timed(_slow_items(5, 0.03))
    assert list(starved) == [0, 1, 2, 3, 4] and starved.batches == 5
    assert starved.wait_share > 0.8
    fed = Timed(range(5))
    for _ in fed:
        time.sleep(0.03)  # the step is the slow part
    assert fed.wait_share < 0.2
    assert fed.total == pytest.approx(0.15, abs=0.1)
    # a loop that stops early (training's last micro-batches of an epoch) still ends the timing
    early = Timed(_slow_items(5, 0.03))
    batches = iter(early)
    for i in batches:
        if i == 2:
            break
    batches.close()
    assert early.batches == 3 and early.total == pytest.approx(0.09, abs=0.06) and early.wait_share > 0.8


def test_recommendation_keeps_the_wait_under_5_percent():
    from melanoma.inputs.loader import expected_wait, recommend_workers

    assert expected_wait(100, 50) == 0 and expected_wait(50, 100) == pytest.approx(0.5)
    # No workers: the main process loads between steps, so a loader twice as fast as the model
    # still leaves it waiting a third of the time (bench loader said 0%; training measured 14-20%).
    assert expected_wait(100, 50, workers=0) == pytest.approx(1 / 3)
    assert expected_wait(50, 50, workers=0) == pytest.approx(0.5) and expected_wait(50, 50, workers=2) == 0
    rates = {1: 40.0, 2: 80.0, 3: 115.0, 4: 150.0}
    assert recommend_workers(rates, step_rate=100) == 3  # 115 >= 100: no wait; 2 workers wait 20%
    assert recommend_workers(rates, step_rate=120) == 3  # 115 for 120: a 4.2% wait, under 5%
    assert recommend_workers(rates, step_rate=125) == 4  # 115 for 125: an 8% wait
    assert recommend_workers(rates, step_rate=1000) == 4  # nothing keeps up: the fastest
    assert recommend_workers({1: 96.0, 2: 190.0}, step_rate=100) == 1  # 4% wait is under 5%


def test_augmentation_does_not_depend_on_the_worker_count(tiny_data):
    import torch

    from melanoma.data.ingest import ingest
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.fast_transforms import FastTrainTransform
    from melanoma.inputs.loader import make_loader

    rows = ingest(tiny_data, verify="none", progress=False).head(24)
    batches = {}
    for workers in (0, 2):
        ds = LesionDataset(rows, FastTrainTransform(32))
        ds.reseed(5)
        loader = make_loader(ds, 8, workers, shuffle=True, generator=torch.Generator().manual_seed(1))
        batches[workers] = torch.cat([b["image"] for b in loader])
    assert batches[0].dtype == torch.uint8 and batches[0].shape == (24, 3, 32, 32)
    assert torch.equal(batches[0], batches[2])


def test_bench_loader_command(tiny_data):
    from typer.testing import CliRunner

    from melanoma.cli import app

    r = CliRunner().invoke(app, ["bench", "loader", "--data", str(tiny_data), "--backbone", "test_efficientnet",
                                 "--image-size", "32", "--batch-size", "8", "--workers", "0,1", "--images", "64"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "trains" in r.output and "Recommended: --workers" in r.output
