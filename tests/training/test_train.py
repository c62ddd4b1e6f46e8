import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from melanoma.config import TrainConfig
from melanoma.metrics import melanoma_auc
from melanoma.training.train import lr_at

# docs/recipe.md, "Training": init LR 3e-5, 15 epochs, the LR of epochs 1..15.
WINNERS_LR_TABLE = [
    3.0000e-05, 3.0000e-04, 2.9624e-04, 2.8515e-04, 2.6727e-04, 2.4352e-04, 2.1508e-04, 1.8338e-04,
    1.5000e-04, 1.1662e-04, 8.4917e-05, 5.6477e-05, 3.2725e-05, 1.4855e-05, 3.7608e-06,
]  # fmt: skip


def test_lr_every_epoch_is_the_winners_table():
    got = [lr_at(e, TrainConfig(lr=3e-5, epochs=15)) for e in range(15)]
    assert got == pytest.approx(WINNERS_LR_TABLE, rel=2e-4)  # the table has 5 significant digits
    assert max(got) == pytest.approx(10 * 3e-5)  # the peak is 10 x the named LR


def test_lr_of_an_18_epoch_run():
    # The spec's rule: epoch 1 at init, epoch e >= 2 at 10 x init x (1 + cos(pi (e - 2) / (n - 1))) / 2.
    got = [lr_at(e, TrainConfig(lr=3e-5, epochs=18)) for e in range(18)]
    assert got[:3] == pytest.approx([3e-5, 3e-4, 3e-4 * (1 + math.cos(math.pi / 17)) / 2])
    assert got[9] == pytest.approx(3e-4 * (1 + math.cos(8 * math.pi / 17)) / 2)
    assert got[-1] == pytest.approx(3e-4 * (1 - math.cos(math.pi / 17)) / 2)  # 2.5540e-06
    assert got[-1] == pytest.approx(2.5540e-06, rel=1e-4)
    assert all(a > b for a, b in zip(got[1:], got[2:], strict=False))  # decreasing after the peak


def test_lr_switches_as_the_reproduction_ran_them():
    # no-cosine: epoch 1 at init, then 10 x init constant.
    assert [lr_at(e, TrainConfig(lr=3e-5, epochs=4, cosine=False)) for e in range(4)] == pytest.approx(
        [3e-5, 3e-4, 3e-4, 3e-4]
    )
    # no warm-up: no scheduler at all, the init LR every epoch (cosine or not).
    for cosine in (True, False):
        cfg = TrainConfig(lr=3e-5, epochs=15, warmup=False, cosine=cosine)
        assert [lr_at(e, cfg) for e in range(15)] == [3e-5] * 15


def test_lr_column_is_what_the_optimiser_used(tmp_path, tiny_data, monkeypatch):
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    used = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(out=str(tmp_path), epochs=3, **FAST)
    metrics = train(table, cfg, progress=False)
    assert metrics.lr.tolist() == pytest.approx([3e-4, 3e-3, 1.5e-3])
    assert pd.read_csv(tmp_path / "metrics.csv").lr.tolist() == pytest.approx([3e-4, 3e-3, 1.5e-3])
    per_epoch = len(used) // 3
    assert used == pytest.approx([3e-4] * per_epoch + [3e-3] * per_epoch + [1.5e-3] * per_epoch)


def test_auc_against_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.1
    score = rng.random(200) + 0.3 * y
    assert melanoma_auc(score, y) == pytest.approx(roc_auc_score(y, score))
    assert melanoma_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(melanoma_auc([0.1, 0.2], [0, 0]))


def test_run_directory_is_not_mixed_and_retraining_replaces_rows(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    fast = dict(
        out=str(tmp_path),
        backbone="test_efficientnet",
        image_size=32,
        epochs=1,
        batch_size=32,
        num_workers=0,
        pretrained=False,
    )
    train(table, TrainConfig(**fast, folds=[0]), progress=False)
    train(table, TrainConfig(**fast, folds=[1]), progress=False)
    with pytest.raises(ValueError, match="fold 1 is already trained"):  # a plain rerun keeps it
        train(table, TrainConfig(**fast, folds=[1]), progress=False)
    shutil.rmtree(tmp_path / "fold1")
    train(table, TrainConfig(**fast, folds=[1]), progress=False)  # removed: trained again, its rows replaced
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(metrics.fold) == [0, 1]
    assert json.loads((tmp_path / "config.json").read_text())["folds"] == [0, 1]
    with pytest.raises(ValueError, match=r"holds a run with other settings \(image_size, lr\)"):
        train(table, TrainConfig(**{**fast, "image_size": 48, "lr": 1e-3}, folds=[2]), progress=False)
    # a run made before a setting existed had its default: another fold trains into it
    config = json.loads((tmp_path / "config.json").read_text())
    for added in ("image_types", "accumulate"):
        del config[added]
    (tmp_path / "config.json").write_text(json.dumps(config))
    train(table, TrainConfig(**fast, folds=[2]), progress=False)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(image_types\)"):
        train(table, TrainConfig(**fast, folds=[3], image_types=["clinical: close-up"]), progress=False)


def test_same_seed_same_metrics_with_augmentation_in_a_worker(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    fast = dict(
        backbone="test_efficientnet",
        image_size=32,
        epochs=2,
        batch_size=32,
        num_workers=1,
        lr=1e-4,
        pretrained=False,
        folds=[0],
    )
    a = train(table, TrainConfig(out=str(tmp_path / "a"), **fast), progress=False)
    b = train(table, TrainConfig(out=str(tmp_path / "b"), **fast), progress=False)
    cols = ["train_loss", "val_loss", "auc"]
    assert a[cols].to_numpy() == pytest.approx(b[cols].to_numpy(), rel=1e-6)
    assert a.train_loss[0] != a.train_loss[1]


def test_validation_metrics_on_hand_made_predictions():
    from sklearn.metrics import accuracy_score, log_loss

    from melanoma.metrics import validation_metrics

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(9), size=60)
    targets = rng.integers(0, 9, 60)
    targets[:6] = 6  # melanoma in both sources
    targets[30:36] = 6
    is_ext = (np.arange(60) >= 30).astype(int)
    got = validation_metrics(probs, targets, is_ext, mel=6)
    assert got["auc"] == pytest.approx(roc_auc_score(targets == 6, probs[:, 6]))
    assert got["auc_20"] == pytest.approx(roc_auc_score(targets[:30] == 6, probs[:30, 6]))
    assert got["auc_20"] != pytest.approx(got["auc"])
    assert got["acc"] == pytest.approx(accuracy_score(targets, probs.argmax(1)))
    assert got["val_loss"] == pytest.approx(log_loss(targets, probs, labels=range(9)), rel=1e-6)
    # By hand: two 2020 melanomas scored 0.9 and 0.2 against two others at 0.5 and 0.1 -> 3/4.
    p = np.full((4, 2), 0.5)
    p[:, 1] = [0.9, 0.5, 0.2, 0.1]
    p[:, 0] = 1 - p[:, 1]
    assert validation_metrics(p, np.array([1, 0, 1, 0]), np.zeros(4), mel=1)["auc_20"] == 0.75


def test_checkpoint_selection_rule():
    from melanoma.training.train import is_better

    assert is_better(0.5, None) and is_better(float("nan"), None)  # the first epoch always
    assert is_better(0.7, 0.6) and not is_better(0.6, 0.6) and not is_better(0.5, 0.6)
    assert not is_better(float("nan"), 0.6)  # NaN never replaces a real score
    assert is_better(0.5, float("nan"))  # but a real score replaces a NaN first epoch


FAST = dict(
    backbone="test_efficientnet",
    image_size=32,
    batch_size=16,
    num_workers=0,
    lr=3e-4,
    pretrained=False,
    folds=[0],
)


def _predict_rows(run, table, rows, checkpoint):
    from torch.utils.data import DataLoader

    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.transforms import eval_transform
    from melanoma.models.inference import predict_probs
    from melanoma.models.model import build_model, load_weights
    from melanoma.rundir import load_config

    cfg = load_config(run)
    model = load_weights(build_model(cfg, 0), run / "fold0" / f"{checkpoint}.safetensors")
    loader = DataLoader(LesionDataset(rows, eval_transform(cfg.image_size)), 64)
    return predict_probs(model, loader, torch.device("cpu"), "", progress=False)


def test_best_best_20_and_last_checkpoints_are_the_right_epochs(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.metrics import validation_metrics
    from melanoma.training.train import train, training_rows

    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(
        out=str(tmp_path), epochs=5, **{**FAST, "lr": 1e-3}
    )  # a high LR: AUC moves between epochs
    metrics = train(table, cfg, progress=False)
    table = training_rows(table, cfg)
    rows = table[(table.fold == 0) & (table.split == "train")]
    targets, is_ext = rows.target.to_numpy(), rows.is_ext.to_numpy()
    for checkpoint, column, epoch in [
        ("best", "auc", metrics.auc.idxmax()),
        ("best_20", "auc_20", metrics.auc_20.idxmax()),
        ("last", "auc", len(metrics) - 1),
    ]:
        probs = _predict_rows(tmp_path, table, rows, checkpoint)
        assert validation_metrics(probs, targets, is_ext, 6)[column] == pytest.approx(metrics[column][epoch])
    assert metrics.auc.idxmax() != len(metrics) - 1 or metrics.auc_20.idxmax() != len(metrics) - 1
    oof = pd.read_csv(tmp_path / "fold0" / "oof.csv")
    assert list(oof.image_name) == list(rows.image_name)
    assert oof.iloc[:, 4:].to_numpy() == pytest.approx(_predict_rows(tmp_path, table, rows, "best"), abs=1e-5)
    saved = pd.read_csv(tmp_path / "metrics.csv")
    assert list(saved.columns[-2:]) == ["images_per_s", "data_wait"]
    assert saved.images_per_s.gt(0).all() and saved.data_wait.between(0, 1).all()
    assert saved.images_per_s.lt(1e5).all()  # a rate a CPU reaches (an epoch timed as 0 s gave 1e12)


def test_gradient_clipping_bounds_the_norm_the_optimiser_sees():
    from melanoma.models.model import MelanomaNet
    from melanoma.training.train import train_step

    torch.manual_seed(0)
    model = MelanomaNet("test_efficientnet", 9).train()
    batch = {"image": torch.randn(8, 3, 32, 32) * 50, "target": torch.arange(8)}
    seen = []

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return super().step(closure)

    opt = Recorder(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    cpu = torch.device("cpu")
    train_step(model, batch, opt, scaler, TrainConfig(), cpu)
    train_step(model, batch, opt, scaler, TrainConfig(grad_clip=0.01), cpu)
    assert seen[0] > 0.05 and seen[1] == pytest.approx(0.01, rel=1e-3)


def test_mixed_precision_and_channels_last_train(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.models.inference import autocast
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(out=str(tmp_path), epochs=1, amp="bf16", channels_last=True, grad_clip=1.0, **FAST)
    metrics = train(table, cfg, progress=False)
    assert np.isfinite(metrics[["train_loss", "val_loss", "auc"]].to_numpy()).all()
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device"):
        autocast(torch.device("cpu"), "fp16")


def test_stopped_fold_needs_resume_and_weights_only_state(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.models.checkpoint import load_state
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    train(table, TrainConfig(out=str(tmp_path), epochs=1, **FAST), progress=False)
    state = torch.load(tmp_path / "fold0" / "state.pt", weights_only=True)  # no pickle needed
    assert (
        state["epoch"] == 1
        and len(state["history"]) == 1
        and "conv_stem.weight" in str(state["model"].keys())
    )
    state["epochs"] = 3  # pretend the run was meant to last 3 epochs and stopped after one
    torch.save(state, tmp_path / "fold0" / "state.pt")
    with pytest.raises(ValueError, match="fold 0 stopped after epoch 1 of 3; pass --resume"):
        train(table, TrainConfig(out=str(tmp_path), epochs=1, **FAST), progress=False)
    assert load_state(tmp_path / "fold0" / "state.pt")["epoch"] == 1  # nothing was lost


def test_weights_and_biases_logging(tmp_path, tiny_data, monkeypatch):
    import sys
    import types

    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    calls = {"log": [], "finish": 0}

    class Run:
        def log(self, row, step):
            calls["log"].append((step, row["auc"]))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()

    fake = types.SimpleNamespace(init=init, util=types.SimpleNamespace(generate_id=lambda: "abc123"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(out=str(tmp_path / "r"), epochs=2, wandb="offline", tags=["b3", "x"], **FAST)
    metrics = train(table, cfg, progress=False)
    init = calls["init"]
    assert (init["name"], init["group"], init["mode"], init["tags"], init["id"]) == (
        "r-fold0", "r", "offline", ["b3", "x"], "abc123",
    )  # fmt: skip
    assert init["config"]["backbone"] == "test_efficientnet" and init["config"]["fold"] == 0
    assert calls["log"] == [(1, metrics.auc[0]), (2, metrics.auc[1])] and calls["finish"] == 1
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ValueError, match="pip install wandb"):
        train(table, TrainConfig(out=str(tmp_path / "s"), epochs=1, wandb="online", **FAST), progress=False)


def test_compiled_model_trains_and_saves_plain_weights(tmp_path, tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.models.model import build_model, load_weights
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(out=str(tmp_path), epochs=1, compile=True, **FAST)
    metrics = train(table, cfg, progress=False)
    assert np.isfinite(metrics[["train_loss", "val_loss"]].to_numpy()).all()
    load_weights(build_model(cfg, 0), tmp_path / "fold0" / "last.safetensors")  # no _orig_mod. prefixes


def test_a_fold_in_training_cannot_be_trained_twice_into_one_run(tmp_path, tiny_data):
    import subprocess
    import sys

    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    cfg = TrainConfig(out=str(tmp_path), epochs=1, **FAST)
    holder = subprocess.Popen(  # another process is training fold 0 here
        [sys.executable, "-c", "import sys, time; from melanoma import rundir\n"
         f"with rundir.fold_locks({str(tmp_path)!r}, [0]):\n print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"fold 0 is being trained by pid {holder.pid} on .* since "):
            train(table, cfg, progress=False)
        assert not (tmp_path / "config.json").exists() and not (tmp_path / "fold0").exists()
        other = TrainConfig(out=str(tmp_path), epochs=1, **{**FAST, "folds": [1]})
        assert len(train(table, other, progress=False)) == 1  # another fold may train meanwhile
    finally:
        holder.kill()
        holder.wait()
    assert len(train(table, cfg, progress=False)) == 1  # the holder died: fold 0 trains now
    assert sorted(pd.read_csv(tmp_path / "metrics.csv").fold) == [0, 1]


def test_the_data_wait_advice_names_prepare_only_where_it_helps():
    """The warning once recommended `prepare` for data already prepared or in HDF5."""
    from melanoma.training.train import _wait_advice

    originals = TrainConfig(backbone="test_efficientnet", pretrained=False)
    prepared = TrainConfig(backbone="test_efficientnet", pretrained=False, data_size=512)
    assert "melanoma prepare" in _wait_advice(0.4, 2, originals, hdf5=False)
    assert "melanoma prepare" not in _wait_advice(0.4, 2, prepared, hdf5=False)
    assert "melanoma prepare" not in _wait_advice(0.4, 2, originals, hdf5=True)
    assert "--workers" in _wait_advice(0.4, 2, prepared, hdf5=True)


def _grads(net, parts):
    """The gradients one train_step leaves (Adam at LR 0: the weights stay as they are)."""
    from melanoma.config import TrainConfig
    from melanoma.training.train import train_step

    optimizer = torch.optim.Adam(net.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss = train_step(net, parts, optimizer, scaler, TrainConfig(), torch.device("cpu"))
    return loss, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _batch(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "target": torch.randint(0, 9, (n,), generator=g)}


def _split(batch: dict, parts: int) -> list[dict]:
    return [{k: v.chunk(parts)[i] for k, v in batch.items()} for i in range(parts)]


def test_accumulated_gradients_are_the_whole_batchs():
    """Without batch statistics (a ViT: LayerNorm), 4 micro-batches of 2 give the gradient and the
    loss of the batch of 8; with BatchNorm they do not, since each micro-batch is normalised by
    its own statistics (what docs/commands.md says BatchNorm sees)."""
    from melanoma.models.model import MelanomaNet

    batch = _batch(8)
    for backbone, equal in (("test_vit", True), ("test_efficientnet", False)):
        torch.manual_seed(0)
        net = MelanomaNet(backbone, 9, dropout=0.0).train()
        whole_loss, whole = _grads(net, batch)
        micro_loss, micro = _grads(net, _split(batch, 4))
        largest = max(float((whole[n] - micro[n]).abs().max()) for n in whole)
        if equal:  # float32 sums in another order: equal to rounding
            assert largest < 1e-5 and abs(whole_loss - micro_loss) < 1e-6, backbone
        else:
            assert largest > 1e-3, backbone


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    from types import SimpleNamespace

    from melanoma.models.model import MelanomaNet
    from melanoma.training.train import set_grad_checkpointing

    batch = _batch(4)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = MelanomaNet("test_efficientnet", 9, dropout=0.0).train()
        if checkpointing:
            set_grad_checkpointing(net, "test_efficientnet")
            assert net.backbone.grad_checkpointing
        results.append(_grads(net, batch))
    (loss, grads), (loss_c, grads_c) = results
    assert abs(loss - loss_c) < 1e-6 and max(float((grads[n] - grads_c[n]).abs().max()) for n in grads) < 1e-6

    def unsupported(enable: bool) -> None:
        raise AssertionError("gradient checkpointing not supported")  # what timm's base class says

    with pytest.raises(ValueError, match="no gradient checkpointing in timm"):
        set_grad_checkpointing(
            SimpleNamespace(backbone=SimpleNamespace(set_grad_checkpointing=unsupported)), "x"
        )


def test_accumulation_keeps_the_schedule_and_the_number_of_steps(tiny_data, tmp_path):
    """--accumulate 4: the same LR per epoch and the same number of optimiser steps as the whole
    batch (the loader serves micro-batches; a partial last batch is dropped either way)."""
    from melanoma.data.ingest import ingest
    from melanoma.models.checkpoint import load_state
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    steps = {}
    for n in (1, 4):
        out = tmp_path / f"acc{n}"
        cfg = TrainConfig(out=str(out), accumulate=n, epochs=2, **FAST)
        train(table, cfg, progress=False)
        metrics = pd.read_csv(out / "metrics.csv")
        assert metrics.lr.tolist() == pytest.approx([lr_at(0, cfg), lr_at(1, cfg)]) == [3e-4, 3e-3]
        optimizer = load_state(out / "fold0" / "state.pt")["optimizer"]
        steps[n] = {int(s["step"]) for s in optimizer["state"].values()}
    assert steps[1] == steps[4] and len(steps[1]) == 1
    with pytest.raises(ValueError, match="accumulate must divide batch_size"):
        TrainConfig(batch_size=16, accumulate=16)


def test_the_auxiliary_head_adds_its_weighted_loss_and_skips_rows_without_a_label():
    import torch.nn.functional as F

    from melanoma.config import TrainConfig
    from melanoma.models.model import MelanomaNet
    from melanoma.targets import IGNORE
    from melanoma.training.train import _loss

    torch.manual_seed(0)
    net = MelanomaNet("test_efficientnet", 2, dropout=0.0, n_aux=3).eval()
    batch = {**_batch(6), "target": torch.tensor([0, 1, 0, 0, 1, 0])}
    batch["aux"] = torch.tensor([0, 2, 1, IGNORE, 2, 0])
    cfg = TrainConfig(aux_weight=0.3)
    with torch.no_grad():
        main, aux = net(batch["image"], with_aux=True)
        assert torch.equal(main, net(batch["image"]))  # the class logits are the plain forward's
        kept = batch["aux"] != IGNORE
        expected = F.cross_entropy(main, batch["target"]) + 0.3 * F.cross_entropy(
            aux[kept], batch["aux"][kept]
        )
        assert float(_loss(net, batch, cfg, torch.device("cpu"))) == pytest.approx(float(expected), rel=1e-6)
        none = {**batch, "aux": torch.full((6,), IGNORE)}  # no row labelled: the main loss alone
        assert float(_loss(net, none, cfg, torch.device("cpu"))) == pytest.approx(
            float(F.cross_entropy(main, batch["target"]))
        )
    with pytest.raises(ValueError, match="no auxiliary head"):
        MelanomaNet("test_efficientnet", 2)(batch["image"], with_aux=True)


def test_a_2024_image_run_trains_an_iddx_1_head_and_predicts_without_it(tmp_path, tiny_data):
    from melanoma.config import resolve
    from melanoma.data.ingest import ingest
    from melanoma.run import Run
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024
    from melanoma.training.train import aux_labels, train, training_table

    data = tmp_path / "data"
    generate_2024(data, Synth2024Config(n_train=240, n_test=4, malignant_rate=0.1, crop_min=32, crop_max=40,
                                        indeterminate_rate=0.1), progress=False)  # fmt: skip
    cfg = resolve("isic2024", {"backbone": "test_efficientnet", "pretrained": False, "image_size": 32, "epochs": 1,
                               "k_folds": 2, "folds": [0], "neg_per_epoch": 60, "batch_size": 16,
                               "num_workers": 0, "out": str(tmp_path / "run")})  # fmt: skip
    assert cfg.aux_weight == 0.3  # the preset's
    table = training_table(data, cfg, progress=False)
    labels = aux_labels(table)
    meta = pd.read_csv(data / "isic2024/train-metadata.csv").set_index("isic_id")
    train_rows = (table.split == "train").to_numpy()
    expected = meta.iddx_1.loc[table.image_name[train_rows]].map(
        {"Benign": 0, "Indeterminate": 1, "Malignant": 2}
    )
    assert (labels[train_rows] == expected.to_numpy()).all() and (labels[train_rows] == 1).sum() > 5
    train(table, cfg, progress=False)
    model = Run(tmp_path / "run").model(0)
    assert model.aux is not None and tuple(model.aux.weight.shape)[0] == 3
    oof = Run(tmp_path / "run").oof()
    assert list(oof.columns[-2:]) == ["benign", "malignant"] and np.isfinite(oof.malignant).all()
    with pytest.raises(ValueError, match="no labelled row here has one"):
        aux_labels(ingest(tiny_data, verify="none", progress=False))  # ISIC 2020: no iddx_1
