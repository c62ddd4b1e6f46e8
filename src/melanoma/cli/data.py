"""Data commands: synth, ingest, prepare, dedup, folds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from melanoma.cli.common import ForceOption, app, int_list
from melanoma.data.folder import DataFolder
from melanoma.progress import console


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write isic2020/, isic2019/ and truth/ into.")],
    n_train: Annotated[int, typer.Option(help="ISIC 2020 train images (before duplicates).")] = 1600,
    n_test: Annotated[int, typer.Option(help="ISIC 2020 test images.")] = 400,
    n_2019: Annotated[int, typer.Option("--n-2019", help="ISIC 2019 images.")] = 800,
    melanoma_rate: Annotated[
        float | None,
        typer.Option(
            help="Melanoma share of the 2020 images (default: 0.018, ISIC 2020's; 0.08 with --centre)."
        ),
    ] = None,
    melanoma_rate_2019: Annotated[
        float, typer.Option("--melanoma-rate-2019", help="Melanoma share of the ISIC 2019 images.")
    ] = 0.18,
    duplicate_rate: Annotated[float, typer.Option(help="Planted near-duplicate groups per image.")] = 0.02,
    sizes: Annotated[
        Literal["small", "real"], typer.Option(help="small (fast) or real (6000x4000 and the like).")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical output.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes; 0 = all cores.")] = 0,
    force: Annotated[
        bool, typer.Option(help="Replace ISIC folders in OUT that synth did not write.")
    ] = False,
    isic2024: Annotated[
        bool,
        typer.Option(
            "--isic2024",
            help="Write the ISIC 2024 layout instead (OUT/isic2024/: metadata CSVs + HDF5 crops); "
            "--n-train / --n-test count lesions.",
        ),
    ] = False,
    malignant_rate: Annotated[float, typer.Option(help="With --isic2024: the malignant share.")] = 0.01,
    centres: Annotated[int, typer.Option(help="With --isic2024: contributing centres (1-7).")] = 4,
    layout: Annotated[
        Literal["challenges", "archive", "isic2024"],
        typer.Option(
            help="challenges: ISIC 2020 + 2019 as their challenges released them; archive: an ISIC Archive "
            "download as isic-cli writes it (OUT/archive/: metadata.csv, ISIC_*.jpg, attribution.txt, "
            "licenses/; --n-train counts lesions, --melanoma-rate-2019 sets their melanoma share); isic2024: "
            "as --isic2024."
        ),
    ] = "challenges",
    centre: Annotated[
        Literal["same", "shifted"] | None,
        typer.Option(
            help="Write a labelled external set instead, in the ISIC 2020 layout (--n-train labelled images): "
            "shifted, from another clinic (another device, darker skin tones, other sites); same, from the "
            "same clinic (another --seed). Default: none, the data to train on."
        ),
    ] = None,
) -> None:
    """Write a synthetic ISIC-like dataset in the real public layouts.

    Examples: melanoma synth data/synthetic --n-train 5000 --seed 1;
    melanoma synth data/synthetic2024 --isic2024 --n-train 20000 --malignant-rate 0.005;
    melanoma synth data/archive --layout archive --n-train 2000;
    melanoma synth data/external --centre shifted --n-train 600
    """
    if centre is not None:
        return _synth_centre(out, centre, n_train, melanoma_rate, seed, workers, force)
    if isic2024 or layout == "isic2024":
        return _synth_2024(out, n_train, n_test, malignant_rate, centres, seed, force)
    if layout == "archive":
        return _synth_archive(out, n_train, melanoma_rate_2019, seed, workers, force)
    from melanoma.synthetic.generate import SynthConfig, generate

    rate = SynthConfig.melanoma_rate_2020 if melanoma_rate is None else melanoma_rate
    cfg = SynthConfig(n_train, n_test, n_2019, rate, melanoma_rate_2019, duplicate_rate, sizes, seed)
    s = generate(out, cfg, workers=workers, force=force)
    console.print(
        f"Wrote {s.n_train_2020} 2020 train, {s.n_test_2020} 2020 test and {s.n_2019} 2019 images "
        f"({s.n_duplicates // 2} planted duplicate pairs) to {s.root}"
    )


def _synth_centre(
    out: Path, centre: str, n: int, rate: float | None, seed: int, workers: int, force: bool
) -> None:
    from melanoma.synthetic.centre import CentreConfig, generate_centre

    cfg = CentreConfig(n, CentreConfig.melanoma_rate if rate is None else rate, centre, seed=seed)  # type: ignore[arg-type]
    n = generate_centre(out, cfg, workers=workers, force=force)
    where = (
        "another clinic (another device, darker skin tones, other sites)"
        if centre == "shifted"
        else "the same clinic"
    )
    console.print(
        f"Wrote an external set from {where}: {n['train']} labelled images ({n['melanomas']} melanomas, "
        f"{n['patients']} patients) and {n['test']} test images to {out / 'isic2020'}"
    )


def _synth_2024(
    out: Path, n_train: int, n_test: int, malignant_rate: float, centres: int, seed: int, force: bool
) -> None:
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

    s24 = generate_2024(
        out, Synth2024Config(n_train, n_test, malignant_rate, centres, seed=seed), force=force
    )
    console.print(
        f"Wrote {s24['train']} ISIC 2024 train lesions ({s24['malignant']} malignant, {s24['patients']} "
        f"patients, {s24['centres']} centres) and {s24['test']} test lesions to {out / 'isic2024'}"
    )


def _synth_archive(
    out: Path, n_lesions: int, melanoma_rate: float, seed: int, workers: int, force: bool
) -> None:
    from melanoma.synthetic.archive import FOLDER, SynthArchiveConfig, generate_archive

    cfg = SynthArchiveConfig(n_lesions, melanoma_rate, seed=seed)
    n = generate_archive(out, cfg, workers=workers, force=force)
    console.print(
        f"Wrote {n['images']} images of {n['lesions']} lesions ({n['clinical']} clinical close-ups, "
        f"{n['undiagnosed']} without a diagnosis; {n['patients']} patients) to {out / FOLDER}, as isic-cli does"
    )


@app.command("ingest")
def ingest_cmd(
    data: Annotated[Path, typer.Argument(help="Folder holding the ISIC downloads (or pre-resized copies).")],
    out: Annotated[
        Path | None, typer.Option(help="Write the table here (CSV; default: only the summary).")
    ] = None,
    data_size: Annotated[
        int | None,
        typer.Option(
            help="Read the prepared jpeg-melanoma-NxN / jpeg-isic2019-NxN of this N (default: the originals)."
        ),
    ] = None,
    external: Annotated[bool, typer.Option(help="Include ISIC 2019.")] = True,
    scheme: Annotated[
        Literal["9c", "4c", "2c", "mb"] | None,
        typer.Option(help="Target classes (default: 9c; mb, malignant vs benign, for ISIC 2024)."),
    ] = None,
    verify: Annotated[
        Literal["decode", "header", "none"],
        typer.Option(help="header (fast: headers and JPEG end markers), decode (every byte) or none."),
    ] = "header",
    skip_bad_images: Annotated[bool, typer.Option(help="Skip undecodable images and list them.")] = False,
    image_types: Annotated[
        str,
        typer.Option(
            help="ISIC Archive downloads: the image types to read, comma-separated, or all. Without it, "
            "dermoscopic images only; the other layouts hold one type."
        ),
    ] = "dermoscopic",
    force: ForceOption = False,
) -> None:
    """Read ISIC 2020 / 2019, ISIC 2024 or an ISIC Archive download into one table and report what is there.

    Example: melanoma ingest data/ --out data/table.csv
    """
    from melanoma.data.ingest import ingest, input_paths, summarize, verify_images
    from melanoma.fileio import check_output, write_csv

    types = [t.strip() for t in image_types.split(",") if t.strip()]
    table = ingest(data, data_size, external, scheme, verify="none", image_types=types)
    if out:  # before the images are checked, which takes a while
        check_output(out, force=force, inputs=input_paths(data, table, data_size))
    skipped = (out.parent if out else data) / "skipped_images.csv"
    table = verify_images(table, verify, skip_bad_images, skipped).reset_index(drop=True)
    console.print(summarize(table))
    if out:
        write_csv(table, out)
        console.print(f"Wrote {len(table)} rows to {out}")


@app.command("prepare")
def prepare_cmd(
    data: Annotated[Path, typer.Argument(help="Folder with the original ISIC downloads.")],
    out: Annotated[Path, typer.Argument(help="Where jpeg-melanoma-NxN/ and jpeg-isic2019-NxN/ go.")],
    sizes: Annotated[str, typer.Option(help="Square sizes, comma-separated.")] = "512,768,1024",
    workers: Annotated[int, typer.Option(help="Processes; 0 = all cores.")] = 0,
    quality: Annotated[int, typer.Option(help="JPEG quality of the outputs.")] = 95,
    seed: Annotated[int, typer.Option(help="Seed of the 15 triple-stratified tfrecord groups.")] = 0,
    force: Annotated[bool, typer.Option(help="Write into jpeg-*-NxN folders prepare did not make.")] = False,
) -> None:
    """Centre-crop and resize every image into the pre-resized layout; resumable.

    Example: melanoma prepare data/ data/ --sizes 512,768
    """
    from melanoma.data.prepare import prepare

    report = prepare(data, out, tuple(int_list(sizes)), workers, quality, seed, force=force)
    console.print(
        f"Wrote {report.written} image(s), skipped {report.skipped} already done, "
        f"{len(report.failed)} unreadable (see {out / 'prepare_report.csv'})"
    )


@app.command("dedup")
def dedup_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (original layouts).")],
    threshold: Annotated[
        float | None, typer.Option(help="Cosine similarity of a candidate pair (default: 0.55, measured).")
    ] = None,
    image_size: Annotated[int, typer.Option(help="Input size of the embedding CNN.")] = 96,
    views: Annotated[
        int,
        typer.Option(
            help="Orientations averaged per image: 8 (all flips and rotations), or 4, 2, 1 (faster)."
        ),
    ] = 8,
    device: Annotated[
        str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    ] = "auto",
    apply_decisions: Annotated[
        bool, typer.Option("--apply", help="Turn DATA/dedup/candidates.csv into DATA/duplicates.csv.")
    ] = False,
    review: Annotated[
        bool,
        typer.Option("--review", help="Review the candidates in the browser (127.0.0.1), saved as you go."),
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the --review server on 127.0.0.1.")] = 8765,
) -> None:
    """Find near-duplicate images with CNN embeddings; review them; apply the decisions.

    Example: melanoma dedup data/   then open data/dedup/review.html, edit
    data/dedup/candidates.csv (decision: duplicate or distinct), and run melanoma dedup data/ --apply
    """
    from melanoma.data.dedup import DEFAULT_THRESHOLD

    if review:
        _review(data, port)
    elif apply_decisions:
        _apply(data)
    else:
        _find(data, DEFAULT_THRESHOLD if threshold is None else threshold, image_size, views, device)


def _review(data: Path, port: int) -> None:
    from melanoma.data.review import server

    httpd = server(data, port)
    console.print(
        f"Reviewing {DataFolder(data).candidates}: open {httpd.url} (its token admits this browser only; "
        "d / x to decide, arrows to move; Ctrl-C stops)",
        soft_wrap=True,
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        console.print("Stopped; every decision is saved. Next: melanoma dedup DATA --apply")
    finally:
        httpd.server_close()


def _apply(data: Path) -> None:
    from melanoma.data.dedup import apply

    result = apply(data)
    console.print(
        f"{result.group.nunique()} duplicate group(s); {int((result.keep == 0).sum())} image(s) leave training; "
        f"wrote {DataFolder(data).duplicates}"
    )


def _find(data: Path, threshold: float, image_size: int, views: int, device: str) -> None:
    from melanoma.data.dedup import find_duplicates

    pairs = find_duplicates(data, threshold, image_size, views=views, device=device)
    current = pairs[pairs.candidate == 1]
    kept = int(((pairs.reviewed == 1) | (pairs.decision != "duplicate")).sum())
    console.print(
        f"{len(current)} candidate pair(s) in {current.group.nunique()} group(s); {kept} decision(s) a person "
        f"made are kept ({int((pairs.candidate == 0).sum())} of them on pairs no longer candidates): "
        f"review {DataFolder(data).review_page}"
    )


@app.command("folds")
def folds_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (as for ingest).")],
    method: Annotated[
        Literal["triple", "default", "newfold", "oldfold"],
        typer.Option(help="triple-stratified, or the winners' published map from the tfrecord column."),
    ] = "triple",
    k: Annotated[int, typer.Option(help="Number of folds (triple only).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the split: the same seed, the same folds.")] = 0,
    data_size: Annotated[
        int | None, typer.Option(help="Read the prepared jpeg-*-NxN of this N (default: the originals).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a DATA/folds.csv that assigns other folds.")] = False,
) -> None:
    """Split patients into k folds and write DATA/folds.csv; prints a per-fold summary.

    Confirmed duplicate groups (DATA/duplicates.csv, from `melanoma dedup --apply`) share a fold
    and their dropped members get fold -1.

    Example: melanoma folds data/ --k 5 --seed 0    or    melanoma folds data/ --method newfold
    """
    from melanoma.data.folds import fold_summary, write_folds

    table, path = write_folds(data, method, k, seed, data_size, force=force)
    console.print(fold_summary(table).round(4).to_string(), markup=False)
    console.print(f"Wrote {path}")
