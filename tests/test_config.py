import math

import pytest
import torch
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.config import PRESETS, WINNERS, TrainConfig, preset, resolve
from melanoma.models.model import MelanomaNet
from melanoma.training.train import lr_at

# The 18 members as docs/recipe.md lists them: folder, size, backbone, and what differs.
MEMBERS = {
    "9c_meta_b3_768_512_ext_18ep": (768, 512, "efficientnet_b3", {"use_meta": True, "epochs": 18}),
    "9c_b4ns_2e_896_ext_15ep": (1024, 896, "tf_efficientnet_b4.ns_jft_in1k", {"lr": 2e-5, "grad_clip": 0.5}),
    "9c_b4ns_448_ext_15ep-newfold": (512, 448, "tf_efficientnet_b4.ns_jft_in1k", {"fold_method": "newfold"}),
    "9c_b4ns_768_640_ext_15ep": (768, 640, "tf_efficientnet_b4.ns_jft_in1k", {}),
    "9c_b4ns_768_768_ext_15ep": (768, 768, "tf_efficientnet_b4.ns_jft_in1k", {}),
    "9c_meta_b4ns_640_ext_15ep": (768, 640, "tf_efficientnet_b4.ns_jft_in1k", {"use_meta": True}),
    "4c_b5ns_1.5e_640_ext_15ep": (768, 640, "tf_efficientnet_b5.ns_jft_in1k", {"scheme": "4c", "lr": 1.5e-5}),
    "9c_b5ns_1.5e_640_ext_15ep": (768, 640, "tf_efficientnet_b5.ns_jft_in1k", {"lr": 1.5e-5}),
    "9c_b5ns_448_ext_15ep-newfold": (512, 448, "tf_efficientnet_b5.ns_jft_in1k", {"fold_method": "newfold"}),
    "9c_meta128_32_b5ns_384_ext_15ep": (
        512, 384, "tf_efficientnet_b5.ns_jft_in1k", {"use_meta": True, "meta_hidden": (128, 32)}
    ),
    "9c_b6ns_448_ext_15ep-newfold": (512, 448, "tf_efficientnet_b6.ns_jft_in1k", {"fold_method": "newfold"}),
    "9c_b6ns_576_ext_15ep_oldfold": (
        768, 576, "tf_efficientnet_b6.ns_jft_in1k", {"fold_method": "oldfold", "grad_clip": 0.5}
    ),
    "9c_b6ns_640_ext_15ep": (768, 640, "tf_efficientnet_b6.ns_jft_in1k", {}),
    "9c_b7ns_1e_576_ext_15ep_oldfold": (
        768, 576, "tf_efficientnet_b7.ns_jft_in1k", {"lr": 1e-5, "fold_method": "oldfold", "grad_clip": 0.5}
    ),
    "9c_b7ns_1e_640_ext_15ep": (768, 640, "tf_efficientnet_b7.ns_jft_in1k", {"lr": 1e-5}),
    "9c_meta_1.5e-5_b7ns_384_ext_15ep": (512, 384, "tf_efficientnet_b7.ns_jft_in1k", {"use_meta": True}),
    "9c_nest101_2e_640_ext_15ep": (768, 640, "resnest101e", {"lr": 2e-5}),
    "9c_se_x101_640_ext_15ep": (768, 640, "seresnext101_32x4d", {}),
}  # fmt: skip

RECIPE = {
    "lr": 3e-5, "epochs": 15, "batch_size": 64, "scheme": "9c", "use_meta": False, "meta_hidden": (512, 128),
    "fold_method": "default", "grad_clip": None, "n_dropout": 5, "warmup": True, "cosine": True,
    "augment": True, "external": True, "pretrained": True, "folds": [0, 1, 2, 3, 4],
}  # fmt: skip


# The peak LR of each member: 10 x the init LR in its name (docs/recipe.md), 3e-4 unless named;
# 9c_meta_1.5e-5_b7ns_384 ran at the default despite its name.
PEAKS = {name: 3e-4 for name in MEMBERS} | {
    "9c_b4ns_2e_896_ext_15ep": 2e-4, "4c_b5ns_1.5e_640_ext_15ep": 1.5e-4, "9c_b5ns_1.5e_640_ext_15ep": 1.5e-4,
    "9c_b7ns_1e_576_ext_15ep_oldfold": 1e-4, "9c_b7ns_1e_640_ext_15ep": 1e-4, "9c_nest101_2e_640_ext_15ep": 2e-4,
}  # fmt: skip


@pytest.mark.parametrize("name", list(MEMBERS))
def test_each_members_learning_rate_peaks_at_ten_times_its_init_lr(name):
    cfg = resolve(name)
    schedule = [lr_at(e, cfg) for e in range(cfg.epochs)]
    assert schedule[0] == pytest.approx(PEAKS[name] / 10)  # the warm-up epoch runs at the named LR
    assert max(schedule) == pytest.approx(PEAKS[name]) and schedule.index(max(schedule)) == 1


def test_the_baseline_and_the_demo_schedules():
    base = resolve("baseline")
    assert [lr_at(e, base) for e in range(3)] == pytest.approx(
        [3e-5, 3e-4, 3e-4 * (1 + math.cos(math.pi / 14)) / 2]
    )
    demo = resolve("demo")  # a tiny model from scratch: a larger LR, the same rule
    assert [lr_at(e, demo) for e in range(2)] == pytest.approx([3e-4, 3e-3])


@pytest.mark.parametrize("name", list(MEMBERS))
def test_each_winning_member(name):
    folder, size, backbone, extra = MEMBERS[name]
    cfg = resolve(name)
    assert (cfg.data_size, cfg.image_size, cfg.backbone, cfg.preset) == (folder, size, backbone, name)
    for key, value in {**RECIPE, **extra}.items():
        assert getattr(cfg, key) == value, key
    with torch.device("meta"):  # the backbone exists in timm under that name
        MelanomaNet(cfg.backbone, 9, n_meta=11 if cfg.use_meta else 0, meta_hidden=cfg.meta_hidden)


def test_registry_has_the_18_members_the_baseline_and_the_demo():
    assert sorted(WINNERS) == sorted(MEMBERS) and len(WINNERS) == 18
    base = resolve("baseline")
    assert (base.backbone, base.pretrained, base.data_size, base.image_size) == (
        "efficientnet_b3",
        True,
        512,
        384,
    )
    assert (base.batch_size, base.folds, base.epochs, base.lr, base.n_dropout) == (48, [0, 1, 2], 15, 3e-5, 5)
    assert (base.external, base.use_meta, base.scheme, base.warmup, base.cosine) == (
        True,
        False,
        "9c",
        True,
        True,
    )
    assert resolve("demo").backbone == "test_efficientnet"


def test_resolution_order_defaults_preset_options():
    assert resolve() == TrainConfig()
    base = {"seed": 7, "epochs": 3, "batch_size": 8}
    cfg = resolve("baseline", {"lr": 1e-4, "epochs": None, "folds": [1]}, base=base)
    assert (cfg.lr, cfg.folds, cfg.seed) == (1e-4, [1], 7)
    assert cfg.batch_size == 48  # the preset's field beats the base
    assert cfg.epochs == 3  # None means "not given": the base's value stays
    with pytest.raises(ValueError, match="unknown preset 'b99'"):
        resolve("b99")
    with pytest.raises(ValueError, match="unknown training settings: colour"):
        resolve(None, {"colour": "red"})
    preset("baseline")["folds"].append(9)  # a copy: the registry is not changed
    assert PRESETS["baseline"]["folds"] == [0, 1, 2]


def test_defaults_match_the_original():
    cfg = TrainConfig()
    assert (cfg.pretrained, cfg.folds, cfg.sync_bn, cfg.lr, cfg.warmup, cfg.cosine) == (
        True, [0, 1, 2, 3, 4], True, 3e-5, True, True,
    )  # fmt: skip
    assert TrainConfig(k_folds=3).folds == [0, 1, 2]  # all folds, however many
    assert TrainConfig(weights="b3.safetensors").pretrained is False  # a weights file replaces ImageNet's
    with pytest.raises(ValueError, match="give --pretrained or --weights, not both"):
        resolve(None, {"pretrained": True, "weights": "b3.safetensors"})


def test_config_validation():
    with pytest.raises(ValueError, match="amp must be one of"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match=r"folds must lie in 0..4"):
        TrainConfig(folds=[5])
    with pytest.raises(ValueError, match="fold_method must be one of"):
        TrainConfig(fold_method="random")


def test_cli_lists_presets():
    r = CliRunner().invoke(app, ["presets"])
    assert r.exit_code == 0, r.output
    for name in PRESETS:
        assert name in r.output
    assert "tf_efficientnet_b7.ns_jft_in1k" in r.output and "1024>896" in r.output and "clip 0.5" in r.output
    assert "edgenext_x_small" in r.output and "pos x10 neg 40000/ep" in r.output


def test_the_larger_2024_backbones_are_timm_models_that_take_the_crops():
    import timm
    import torch

    from melanoma.models.model import MelanomaNet

    for name in ("isic2024-edgenext", "isic2024-convnextv2", "isic2024-eva02"):
        cfg = resolve(name)
        assert cfg.scheme == "mb" and cfg.pos_oversample == 10 and cfg.neg_per_epoch == 40_000
        assert timm.is_model(cfg.backbone) and timm.list_pretrained(cfg.backbone + ".*")  # weights on the hub
    # the smallest, built without weights, scores a batch of crops at its preset's size
    cfg = resolve("isic2024-convnextv2", {"pretrained": False})
    net = MelanomaNet(cfg.backbone, 2).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)).shape == (2, 2)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"image_size": 0}, "image_size must be at least 16 pixels, got 0"),
        ({"lr": float("inf")}, "lr must be a positive finite number, got inf"),
        ({"lr": float("nan")}, "lr must be a positive finite number, got nan"),
        ({"grad_clip": float("inf")}, "grad_clip must be positive and finite"),
        ({"data_size": 0}, "data_size must be positive"),
        ({"k_folds": 1, "folds": [0]}, "k_folds at least 2"),
        ({"drop_path": 1.0}, r"drop_path must lie in \[0, 1\)"),
        ({"pos_oversample": 0}, "pos_oversample must be at least 1, got 0"),
        ({"neg_per_epoch": 0}, "neg_per_epoch must be at least 1"),
        ({"scheme": "3c"}, "scheme must be one of 9c, 4c, 2c, mb"),
    ],
)
def test_impossible_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_impossible_settings_stop_the_cli_before_anything_is_written(tmp_path, tiny_data):
    for option, value in [("--batch-size", "1"), ("--image-size", "0"), ("--lr", "inf")]:
        run = tmp_path / option.strip("-")
        r = CliRunner().invoke(
            app, ["train", str(tiny_data), "--out", str(run), option, value, "--no-pretrained"]
        )
        assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output, (option, r.output)
        assert not run.exists()  # no config (or anything) left behind
