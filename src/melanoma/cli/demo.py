"""The demo: the whole system on synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melanoma.cli.common import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where the synthetic data goes (default: $MELANOMA_CACHE, else ~/.cache/melanoma)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override the demo's epochs (default: the demo's own, 3).")
    ] = None,
    isic2024: Annotated[
        bool,
        typer.Option(
            "--isic2024",
            help="The ISIC 2024 demo instead: crops in HDF5, an image model, LightGBM and the tree ensemble stacked on it, pAUC "
            "(default --out runs/demo2024).",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline on synthetic data: generate, ingest, folds, train, predict.

    Examples: melanoma demo --out runs/demo; melanoma demo --isic2024
    """
    from melanoma.demo import run_demo, run_demo_2024

    overrides = {"epochs": epochs} if epochs else None
    if isic2024:
        run_demo_2024(Path("runs/demo2024") if out == Path("runs/demo") else out, cache, overrides)
        return
    run_demo(out, cache, train_overrides=overrides)


if __name__ == "__main__":
    app()
