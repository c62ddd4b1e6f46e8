import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image as ImageModule

from melanoma.evaluation.export import export_run
from melanoma.rundir import load_fold_model


@pytest.mark.parametrize("name", ["plain", "meta"])
def test_onnx_export_runs_in_onnxruntime_like_pytorch(tiny_runs, tmp_path, name):
    run = tiny_runs[name]
    done = export_run(run, tmp_path, "best")
    folds = [0, 1] if name == "plain" else [0]
    assert [p.name for p, _ in done] == [f"fold{k}_best.onnx" for k in folds]
    path = done[0][0]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["classes"])[6] == "melanoma" and props["melanoma_index"] == "6"
    assert props["input_size"] == "32" and json.loads(props["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    columns = json.loads(props["metadata_columns"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    assert inputs == (["image", "metadata"] if name == "meta" else ["image"])
    assert (len(columns) > 0) == (name == "meta")
    torch.manual_seed(3)
    image = torch.randn(5, 3, 32, 32)
    meta = torch.randn(5, len(columns))
    feed = {"image": image.numpy()} | ({"metadata": meta.numpy()} if name == "meta" else {})
    got = session.run(None, feed)[0]
    model = load_fold_model(run, 0, "best")
    with torch.no_grad():
        expected = torch.softmax(model(image, meta if name == "meta" else None), 1).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert got.sum(1) == pytest.approx(np.ones(5), abs=1e-5)


def test_the_readme_snippet_scores_like_predict(tiny_runs, tiny_data, tmp_path):
    """The inference block of docs/commands.md, with onnxruntime, numpy, Pillow and OpenCV alone, gives
    `predict --images`'s calibrated melanoma score from the exported files' metadata."""
    import shutil
    from pathlib import Path

    from melanoma.evaluation.predict import predict_images
    from melanoma.results import Calibration, Scores

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    Calibration(1.7, "fold*/oof.csv", 100, 5, 15, Scores(0.1, 0.1, 0.3), Scores(0.05, 0.09, 0.28)).save(run)
    export_run(run)
    props = {p.key: p.value for p in onnx.load(str(run / "onnx" / "fold0_best.onnx")).metadata_props}
    assert json.loads(props["calibration"]) == {"temperature": 1.7} and json.loads(props["folds"]) == [0, 1]
    assert "centred square" in props["preprocessing"] and "8 views" in props["test_time_augmentation"]
    readme = (Path(__file__).parents[2] / "docs" / "commands.md").read_text()
    code = readme.split("<!-- onnx-inference -->\n```python\n")[1].split("```\n<!-- /onnx-inference -->")[0]
    assert 'run = "runs/b3"' in code
    namespace: dict = {}
    exec(code.replace('run = "runs/b3"', f"run = {str(run)!r}"), namespace)  # noqa: S102
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((tiny_data / "isic2020" / "jpeg" / "test").glob("*.jpg"))[:6]:  # not square
        shutil.copy(path, photos)
    expected = predict_images(run, [photos], progress=False)
    got = np.array([namespace["melanoma_score"](p) for p in expected.image_path])
    assert np.abs(got - expected.melanoma.to_numpy()).max() < 1e-4
    # What a naive user got before: no centred square, no TTA, no fold mean, no temperature.
    naive = []
    for path in expected.image_path:
        x = np.asarray(ImageModule.open(path).convert("RGB").resize((32, 32)), np.float32) / 255
        x = ((x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)[None]
        naive.append(namespace["sessions"][0].run(None, {"image": x})[0][0, 6])
    assert np.abs(np.array(naive) - expected.melanoma.to_numpy()).max() > 1e-3
