"""ISIC 2024 crops read straight from train-image.hdf5 against the same crops as JPEG files.

Writes a synthetic 2024 dataset (`melanoma synth --isic2024`, crops of 64-128 px), unpacks the
crops into train-image/image/<isic_id>.jpg (the other layout of the download), then times:
- decoding every crop in one process (read_rgb) from each source;
- the training loader (LesionDataset, the validation transform at 128 px, batch 64) with 0 and
  2 workers from each source;
and prints the resident memory of this process as it reads more crops from the HDF5 file (it
must stay flat: only the bytes of the crop asked for are read).

    python benchmarks/hdf5_read.py [--n 20000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from melanoma.data.ingest import ingest
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.decode import read_rgb
    from melanoma.inputs.loader import make_loader
    from melanoma.inputs.transforms import pipeline_transforms
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="crops")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hdf5_read_"))
    try:
        hdf5_data, file_data = work / "hdf5", work / "files"
        start = time.perf_counter()
        generate_2024(hdf5_data, Synth2024Config(n_train=args.n, n_test=3), progress=False)
        print(f"{args.n} synthetic crops written in {time.perf_counter() - start:.0f} s")
        shutil.copytree(hdf5_data, file_data)
        folder = file_data / "isic2024"
        (folder / "train-image.hdf5").unlink()
        images = folder / "train-image/image"
        images.mkdir(parents=True)
        with h5py.File(hdf5_data / "isic2024/train-image.hdf5", "r") as f:
            for key in f:
                (images / f"{key}.jpg").write_bytes(bytes(f[key][()]))
        size = (hdf5_data / "isic2024/train-image.hdf5").stat().st_size / 2**20
        print(f"train-image.hdf5: {size:.0f} MiB; the same crops as files: {args.n} JPEGs")
        tables = {
            name: ingest(root, verify="none", progress=False).query("split == 'train'")
            for name, root in (("hdf5", hdf5_data), ("files", file_data))
        }
        base = rss_mib()
        for name, table in tables.items():
            paths = table.image_path.tolist()
            start = time.perf_counter()
            for i, path in enumerate(paths):
                read_rgb(path)
                if name == "hdf5" and (i + 1) in (len(paths) // 4, len(paths) // 2, len(paths)):
                    print(
                        f"  hdf5: after {i + 1} crops, resident memory {rss_mib():.0f} MiB (before: {base:.0f})"
                    )
            rate = len(paths) / (time.perf_counter() - start)
            print(f"decode in one process, {name}: {rate:.0f} crops/s")
        _, val_tf = pipeline_transforms(128, False, (0.5,) * 3, (0.25,) * 3, "fast")
        for workers in (0, 2):
            for name, table in tables.items():
                loader = make_loader(LesionDataset(table, val_tf), 64, workers)
                start = time.perf_counter()
                n = sum(len(batch["image"]) for batch in loader)
                rate = n / (time.perf_counter() - start)
                print(f"loader, {workers} worker(s), {name}: {rate:.0f} images/s at 128 px")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
