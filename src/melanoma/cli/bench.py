"""Measuring this machine: bench loader."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melanoma.cli.common import Commands, app, int_list
from melanoma.config import TrainConfig
from melanoma.progress import console

bench_app = typer.Typer(
    cls=Commands, help="Measure this machine: `melanoma bench loader`.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("loader")
def bench_loader(
    data: Annotated[Path, typer.Option(help="Data folder (as for ingest).")],
    data_size: Annotated[
        int | None, typer.Option(help="Read the prepared jpeg-*-NxN of this N (default: the originals).")
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="The model whose step rate the loader must keep up with.")
    ] = "efficientnet_b3",
    image_size: Annotated[int, typer.Option(help="Model input size the loader prepares.")] = 384,
    batch_size: Annotated[int, typer.Option(help="Batch size per process.")] = 48,
    amp: Annotated[str, typer.Option(help="Mixed precision of the model step: off, bf16 or fp16.")] = "off",
    pipeline: Annotated[str, typer.Option(help="Input pipeline: fast or reference.")] = "fast",
    device: Annotated[
        str, typer.Option(help="Device of the model step: auto, cpu, cuda, cuda:1 ...")
    ] = "auto",
    workers: Annotated[
        str | None, typer.Option(help="Worker counts to try, e.g. 0,2,4,8 (default: 0 up to the cores).")
    ] = None,
    images: Annotated[int, typer.Option(help="Train images to draw from.")] = 512,
) -> None:
    """Loader images/s against the worker count, the model's own training rate on this machine,
    and the worker count at which waiting for data falls under 5% of step time (training's
    automatic count follows the same rule).

    Example: melanoma bench loader --data data/ --data-size 512 --backbone efficientnet_b3 --amp bf16
    """
    from rich.table import Table

    from melanoma.training.loader_bench import loader_bench

    cfg = TrainConfig(backbone=backbone, image_size=image_size, amp=amp, pipeline=pipeline, device=device,
                      pretrained=False)  # fmt: skip
    counts = None if workers is None else int_list(workers)
    found = loader_bench(data, cfg, batch_size, data_size, images, counts)
    title = f"{backbone} at {image_size} px on {found.device}: trains {found.model_images_per_s:.0f} images/s"
    shown = Table("workers", "loader images/s", "expected wait", title=title)
    for r in found.rows:
        shown.add_row(str(r["workers"]), f"{r['images_per_s']:.0f}", f"{r['expected_wait']:.0%}")
    console.print(shown)
    console.print(f"Recommended: --workers {found.recommended}")
