import pytest
import torch

from melanoma.models.model import MelanomaNet
from melanoma.models.weights import WeightsError


@pytest.mark.parametrize("n_classes", [9, 4, 2])
@pytest.mark.parametrize("n_dropout", [1, 5])
def test_head_shapes(n_classes, n_dropout):
    model = MelanomaNet("test_efficientnet", n_classes, n_dropout=n_dropout)
    assert len(model.dropouts) == n_dropout
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, n_classes)


def test_multi_sample_dropout_averages_the_copies():
    torch.manual_seed(0)
    model = MelanomaNet("test_efficientnet", 9, n_dropout=5, dropout=0.5).train()
    for m in model.backbone.modules():  # freeze batch statistics so the features repeat exactly
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    x = torch.randn(4, 3, 32, 32)
    features = model.backbone(x)
    torch.manual_seed(1)
    got = model(x)
    torch.manual_seed(1)  # the backbone draws no random numbers: the copies see the same masks
    expected = torch.stack([model.fc(d(features)) for d in model.dropouts]).mean(0)
    assert torch.allclose(got, expected, atol=1e-6)
    # Five different masks: the average differs from any single copy.
    torch.manual_seed(1)
    single = model.fc(model.dropouts[0](features))
    assert not torch.allclose(got, single)
    # In eval mode dropout is the identity and the head is one Linear.
    model.eval()
    assert torch.allclose(model(x), model.fc(model.backbone(x)), atol=1e-6)


def test_metadata_branch():
    model = MelanomaNet("test_efficientnet", 9, n_meta=11, meta_hidden=(128, 32))
    layers = list(model.meta)
    assert [type(m).__name__ for m in layers] == [
        "Linear", "BatchNorm1d", "SiLU", "Dropout", "Linear", "BatchNorm1d", "SiLU",
    ]  # fmt: skip
    assert layers[0].in_features == 11 and layers[4].out_features == 32 and layers[3].p == 0.3
    assert model.fc.in_features == model.backbone.num_features + 32
    assert model(torch.randn(4, 3, 32, 32), torch.randn(4, 11)).shape == (4, 9)
    with pytest.raises(ValueError, match="pass meta features"):
        model(torch.randn(4, 3, 32, 32))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown timm backbone 'efficientnet_b99'"):
        MelanomaNet("efficientnet_b99", 9)


def test_pretrained_weights_that_cannot_be_had_are_an_error_not_random():
    with pytest.raises(WeightsError, match="could not fetch pretrained weights for 'test_efficientnet'"):
        MelanomaNet("test_efficientnet", 9, pretrained=True)


BACKBONES = (
    [f"efficientnet_b{i}" for i in range(8)]
    + [f"tf_efficientnet_b{i}.ns_jft_in1k" for i in range(4, 8)]
    + ["seresnext101_32x4d", "resnest101e"]
    + [f"tf_efficientnet_lite{i}" for i in range(3)]
    + ["test_efficientnet", "test_resnet", "test_convnext", "test_vit"]
)


@pytest.mark.parametrize("name", BACKBONES)
def test_any_timm_backbone_by_name(name):
    # Built on the meta device: shapes and wiring without allocating (or downloading) weights.
    with torch.device("meta"):
        model = MelanomaNet(name, 4, n_meta=7, meta_hidden=(64, 16), n_dropout=3).eval()
        out = model(torch.empty(2, 3, 64, 64), torch.empty(2, 7))
        features = model.backbone(torch.empty(1, 3, 64, 64))
    assert out.shape == (2, 4)
    assert model.fc.in_features == features.shape[1] + 16
    assert len(model.dropouts) == 3 and model.dropouts[0].p == 0.5
    assert model.backbone.get_classifier().__class__.__name__ == "Identity"  # classifier removed


def _timm_checkpoint(tmp_path, name="test_efficientnet"):
    import timm

    torch.manual_seed(5)
    full = timm.create_model(name, num_classes=1000)  # as published: with its classifier
    return full, full.state_dict()


def test_weights_file_safetensors_and_torch_state_dict(tmp_path):
    from safetensors.torch import save_file

    full, state = _timm_checkpoint(tmp_path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        net = MelanomaNet("test_efficientnet", 9, weights=path)
        for key, value in net.backbone.state_dict().items():
            assert torch.equal(value, state[key]), (path, key)
    # A MelanomaNet checkpoint (a run's best.safetensors) also initialises the backbone.
    from melanoma.models.checkpoint import save_weights

    save_weights(net, tmp_path / "best.safetensors")
    again = MelanomaNet("test_efficientnet", 2, weights=tmp_path / "best.safetensors")
    assert torch.equal(again.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_weights_file_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        MelanomaNet("test_efficientnet", 9, weights=tmp_path / "missing.safetensors")
    _, state = _timm_checkpoint(tmp_path, "test_resnet")
    torch.save(state, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match=r"resnet.pth: \d+ of the backbone's \d+ tensors are missing"):
        MelanomaNet("test_efficientnet", 9, weights=tmp_path / "resnet.pth")
    _, state = _timm_checkpoint(tmp_path)
    state["conv_stem.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(WeightsError, match="shapes do not fit the backbone: conv_stem.weight"):
        MelanomaNet("test_efficientnet", 9, weights=tmp_path / "bad_shape.pth")
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a pickled module, not tensors
    with pytest.raises(WeightsError, match="files holding other Python objects are refused"):
        MelanomaNet("test_efficientnet", 9, weights=tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="not both"):
        MelanomaNet("test_efficientnet", 9, pretrained=True, weights=tmp_path / "resnet.pth")


def test_training_is_pretrained_by_default_and_says_what_to_do_offline(tmp_path, tiny_data):
    from typer.testing import CliRunner

    from melanoma.cli import app

    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(tiny_data), "--out", str(run), "--backbone", "test_efficientnet",
                                 "--image-size", "32", "--epochs", "1", "--workers", "0"])  # fmt: skip
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "could not fetch pretrained weights for 'test_efficientnet'" in text
    assert "--no-pretrained" in text and "--weights" in text
    assert not list(run.glob("fold*/*.safetensors"))  # nothing trained from random weights


def test_drop_path_on_a_network_without_it_is_refused():
    """--drop-path on a network timm builds without DropPath layers did nothing."""
    from timm.layers import DropPath

    from melanoma.models.model import create_backbone

    with pytest.raises(ValueError, match="dla46_c takes no stochastic depth"):
        create_backbone("dla46_c", False, drop_path=0.2)  # timm: TypeError on drop_path_rate
    net = create_backbone("test_efficientnet", False, drop_path=0.2)
    assert any(isinstance(m, DropPath) for m in net.modules())
