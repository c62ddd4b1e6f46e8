import time

import pytest

from melanoma import loader
from melanoma.loader import Timed, auto_workers, batch_bytes, fit_workers


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
