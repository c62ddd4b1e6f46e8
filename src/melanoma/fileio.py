"""Writing files so that a crash never leaves half of one: the content goes to a temporary file
next to the target (PATH.tmp), which is then renamed over it (atomic on POSIX filesystems). A
process killed mid-write leaves the old file intact and at worst a stray PATH.tmp, which the next
write of PATH replaces."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def atomic_write(path: Path, write: Callable[[Path], object], durable: bool = False) -> Path:
    """Run write(tmp), then move tmp over path; `durable` flushes it to disk first (checkpoints)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    if durable:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A table as CSV (no index), atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
