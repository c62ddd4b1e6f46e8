"""Which out-of-distribution score separates better: the feature distance or the energy?

On a run with an OOD reference (`melanoma ood`; the demo's pretrained run has one), both scores of
evaluation/ood.py are computed for: the run's own test images (held-out lesions from its data,
never trained on), 15 non-dermoscopy photographs (scikit-image's sample pictures), and two
external sets (synthetic/centre.py: the same clinic and another clinic). Printed: each score's
AUROC for photographs against held-out lesions and for the other clinic against the same one, and
the share of each set above 1 (flagged), with the input checks' quality flags beside them.

Run:  .venv/bin/python benchmarks/ood_scores.py --run runs/demo/baseline [--data DATA]
      (DATA: the run's data folder, default the one its config.json records; `melanoma demo`
      writes the run; benchmarks/readme_figures.py runs this on the demo and puts the figures in
      the README.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "moon", "page", "text", "clock",
          "immunohistochemistry", "hubble_deep_field", "stereo_motorcycle", "colorwheel", "retina")  # fmt: skip


def _photos(folder: Path) -> list[Path]:
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        picture = getattr(skimage.data, name)()
        picture = np.asarray(picture[0] if isinstance(picture, tuple) else picture)
        paths.append(folder / f"{name}.png")
        cv2.imwrite(str(paths[-1]), picture if picture.ndim == 2 else picture[:, :, ::-1])
    return paths


def compare(run: Path, data: Path | None = None, n_external: int = 300) -> dict:
    """Both scores on the four sets; AUROCs and flag rates (see the module docstring)."""
    from melanoma.data.ingest import ingest
    from melanoma.evaluation.ood import DEFAULT, SCORES, input_checks
    from melanoma.evaluation.predict import meta_matrix
    from melanoma.run import Run
    from melanoma.synthetic.centre import CentreConfig, generate_centre

    opened = Run(run)
    data = Path(data or opened.config["data_folder"])
    size = opened.settings.data_size
    table = ingest(data, size, verify="none", progress=False)
    meta = meta_matrix(table, run)
    test = (table.split == "test").to_numpy()
    sets = {
        "held-out lesions": input_checks(
            run, table[test], None if meta is None else meta[test], progress=False
        )
    }
    with tempfile.TemporaryDirectory() as tmp:
        from melanoma.data.loose import read_images

        photos = read_images(_photos(Path(tmp) / "photos"))
        sets["photographs"] = input_checks(run, photos, None, progress=False)
        for centre, seed in (("same", 201), ("shifted", 202)):
            folder = Path(tmp) / centre
            generate_centre(
                folder, CentreConfig(n_images=n_external, centre=centre, seed=seed), progress=False
            )
            if size:
                from melanoma.data.prepare import prepare

                prepare(folder, folder, sizes=(size,), progress=False)
            rows = ingest(folder, size, verify="none", progress=False)
            rows = rows[rows.split == "train"]
            sets[f"{centre} clinic"] = input_checks(run, rows, None, progress=False)

    def auroc(outside: str, inside: str, score: str) -> float:
        a, b = sets[outside][f"ood_{score}"].to_numpy(), sets[inside][f"ood_{score}"].to_numpy()
        return float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]))

    return {
        "default": DEFAULT,
        "auroc": {s: {"photographs vs held-out": auroc("photographs", "held-out lesions", s),
                      "other clinic vs same clinic": auroc("shifted clinic", "same clinic", s)} for s in SCORES},
        "flagged": {name: {"images": len(c), **{s: float((c[f"ood_{s}"] > 1).mean()) for s in SCORES},
                           "quality": float((c.quality != "").mean()), "flag": float(c.flag.mean())}
                    for name, c in sets.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(compare(args.run, args.data), indent=1))


if __name__ == "__main__":
    main()
