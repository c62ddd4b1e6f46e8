"""Progress bars (rich) shared by every long step."""

from __future__ import annotations

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


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Show a bar while the block runs; yields `advance(n=1, **fields)`."""
    if not enabled:
        yield lambda n=1, **fields: None
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
