"""Progress off a terminal (a batch job's log file): plain lines, not a bar that never draws."""

import io

from rich.console import Console

from melanoma import progress


def _run(monkeypatch, every: float, steps: int = 8) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, width=200))  # a file: not a terminal
    monkeypatch.setattr(progress, "LOG_EVERY", every)
    with progress.progress_bar("dedup: embedding images", steps) as advance:
        for _ in range(steps):
            advance(1, loss=0.25)
    return out.getvalue().splitlines()


def test_a_log_file_gets_progress_lines(monkeypatch):
    lines = _run(monkeypatch, every=0.0)
    assert len(lines) == 8  # every step here (the interval is 0), the last one once
    assert lines[1].startswith("dedup: embedding images 2/8 (25%), 0:00:00 elapsed, about 0:00:00 left")
    assert lines[-1] == "dedup: embedding images 8/8 (100%), 0:00:00 elapsed  loss 0.25"
    quiet = _run(monkeypatch, every=3600.0)
    assert quiet == ["dedup: embedding images 8/8 (100%), 0:00:00 elapsed  loss 0.25"]  # only the end
