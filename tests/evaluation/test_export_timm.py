"""evaluation/export_timm.py: `melanoma export RUN --format timm` writes folders that timm alone
loads and that score as `predict --images --no-tta` does."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from melanoma.cli import app

# Only timm and safetensors (and the Pillow and numpy every Python image user has): no melanoma.
SCRIPT = """
import json, sys
from pathlib import Path

import numpy as np
import safetensors.torch
import timm
import torch
from PIL import Image

folder, photos = Path(sys.argv[1]), sorted(Path(sys.argv[2]).glob("*.png"))
config = json.loads((folder / "config.json").read_text())
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
weights = safetensors.torch.load_file(folder / "model.safetensors")  # the plain tensors, no pickle
assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items() if k in weights)
mean = np.array(config["pretrained_cfg"]["mean"], np.float32)
std = np.array(config["pretrained_cfg"]["std"], np.float32)
rows = []
for path in photos:  # already the model's input size: no resize
    x = (np.asarray(Image.open(path).convert("RGB"), np.float32) / 255 - mean) / std
    with torch.no_grad():
        rows.append(model(torch.from_numpy(x.transpose(2, 0, 1))[None]).softmax(1)[0].tolist())
print(json.dumps({"labels": config["label_names"], "probabilities": rows}))
"""


def test_a_timm_folder_scores_like_predict(tiny_runs, tiny_data, tmp_path):
    from melanoma.evaluation.predict import predict_images
    from melanoma.run import Run

    run = tiny_runs["plain"]
    out = tmp_path / "hub"
    r = CliRunner().invoke(app, ["export", str(run), "--format", "timm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    folder = out / "fold0_best"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    size = Run(run).settings.image_size
    assert config["architecture"] == "test_efficientnet" and config["num_classes"] == 9
    assert (
        config["pretrained_cfg"]["input_size"] == [3, size, size]
        and len(config["pretrained_cfg"]["mean"]) == 3
    )
    readme = (folder / "README.md").read_text()
    front = readme.split("---\n")[1]
    for key in ('library_name: "timm"', "license: ", "datasets: ", "metrics: ", "pipeline_tag: "):
        assert key in front, key
    assert "# Model card" in readme and "local-dir:" in readme
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, path in enumerate(sorted((tiny_data / "isic2020" / "jpeg" / "test").glob("*.jpg"))[:4]):
        Image.open(path).convert("RGB").resize((size, size)).save(photos / f"photo{i}.png")
    expected = predict_images(run, [photos], tta=False, progress=False)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out / "fold0_best"), str(photos)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["labels"] == Run(run).config["classes"]
    # predict averages the two folds; fold 0's folder alone is fold 0's model: average both folders
    second = subprocess.run([sys.executable, "-c", SCRIPT, str(out / "fold1_best"), str(photos)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    both = (
        np.array(got["probabilities"]) + np.array(json.loads(second.stdout.splitlines()[-1])["probabilities"])
    ) / 2
    ours = expected[[f"p_{n}" for n in got["labels"]]].to_numpy()
    assert np.abs(both - ours).max() < 1e-5


def test_a_run_with_metadata_is_refused_with_the_reason(tiny_runs, tmp_path):
    from melanoma.evaluation.export_timm import export_timm

    with pytest.raises(ValueError, match="metadata branch.*no timm model does.*ONNX"):
        export_timm(tiny_runs["meta"], tmp_path / "hub")
    assert not (tmp_path / "hub").exists()
