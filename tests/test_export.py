import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

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
