"""Progress bars (rich) shared by every long step.

On a terminal, a live bar. When the output goes to a file or a pipe (a batch job's log), a bar
cannot be drawn, so a plain line is written instead every LOG_EVERY seconds (and at the end):
"dedup: embedding images 1200/10500 (11%), 0:01:45 elapsed, about 0:13:40 left".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True, soft_wrap=True)  # long messages stay whole lines
LOG_EVERY = float(os.environ.get("MELANOMA_PROGRESS_EVERY", 30))  # seconds between lines off a terminal


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def _progress_lines(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Progress as plain lines, for logs: at most one per LOG_EVERY seconds, and one at the end."""
    start = last = time.monotonic()
    done = 0
    info = ""

    def line() -> None:
        elapsed = time.monotonic() - start
        share = f" ({done / total:.0%})" if total else ""
        left = f", about {_clock(elapsed * (total - done) / done)} left" if 0 < done < total else ""
        console.print(
            f"{description} {done}/{total}{share}, {_clock(elapsed)} elapsed{left}{info}", markup=False
        )

    def advance(n: int = 1, **fields: object) -> None:
        nonlocal done, last, info
        done += n
        if fields:
            info = "  " + "  ".join(f"{k} {v}" for k, v in fields.items())
        if time.monotonic() - last >= LOG_EVERY and done < total:
            last = time.monotonic()
            line()

    yield advance
    line()


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Show a bar while the block runs; yields `advance(n=1, **fields)`."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    if not console.is_terminal:
        with _progress_lines(description, total) as advance:
            yield advance
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: object) -> None:
            info = "  ".join(f"{k} {v}" for k, v in fields.items())
            bar.update(task, advance=n, **({"info": info} if fields else {}))

        yield advance


def map_chunks(
    fn: Callable[..., list[T]],
    items: Sequence[object],
    description: str,
    workers: int,
    progress: bool = True,
    chunk: int = 16,
    extra: tuple = (),
) -> list[T]:
    """fn(chunk_of_items, *extra) -> list, over `items` in chunks, in order, with a progress bar.

    `workers` processes (module-level `fn` only); 1 runs here, which is also what tests debug.
    """
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    out: list[T] = []
    with progress_bar(description, len(items), progress) as advance:
        if workers == 1:
            results = (fn(c, *extra) for c in chunks)
            for res in results:
                out += res
                advance(len(res))
        else:
            with ProcessPoolExecutor(workers) as pool:
                for res in pool.map(fn, chunks, *([e] * len(chunks) for e in extra)):
                    out += res
                    advance(len(res))
    return out
