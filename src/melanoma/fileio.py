"""Writing files so that a crash never leaves half of one: the content goes to a temporary file
next to the target (PATH.tmp), which is then renamed over it (atomic on POSIX filesystems). A
write that fails (a full disk, Ctrl-C) removes its PATH.tmp; a process killed mid-write leaves the
old file intact and at worst a stray PATH.tmp, which the next write of PATH replaces."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd


def atomic_write(path: Path, write: Callable[[Path], object], durable: bool = False) -> Path:
    """Run write(tmp), then move tmp over path; `durable` flushes it to disk first (checkpoints).
    A missing folder on the way is made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: the old file stays and no part of the new one
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A table as CSV (no index), atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def check_output(
    path: Path, *, folder: bool = False, force: bool = False, inputs: Iterable[Path] = ()
) -> Path:
    """Refuse an output path that would destroy something, before any work is done.

    - a file where a folder is wanted, or the reverse;
    - anything that is, or lies inside, one of `inputs` (the data's CSVs and image folders),
      and a folder that directly holds one of them: never, even with `force`;
    - a file that exists: the command cannot tell its own earlier output from a user's file,
      so it is overwritten only with `force` (outputs a command keeps inside its own run or
      suite folder do not come through here).
    """
    path = Path(path)
    real = resolve(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; a folder is wanted here")
    if not folder and path.is_dir():
        raise ValueError(f"{path} is a folder; a file name is wanted here")
    for item in map(Path, inputs):
        item = resolve(item)
        inside = real == item or item in real.parents
        holds = folder and item.parent == real
        if inside or holds:
            raise ValueError(f"{path} would write over the input data ({item}): choose another place")
    if not folder and path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to overwrite it")
    return path


def resolve(path: Path) -> Path:
    """The absolute path with every symlink followed; a symlink loop on the way is a ValueError
    naming the path (pathlib raises RuntimeError or OSError there)."""
    path = Path(path)
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:
        raise ValueError(
            f"{path}: a symbolic link on this path points back into itself (a loop): {err}"
        ) from None
