import pytest
import torch

from melanoma.model import MelanomaNet
from melanoma.weights import WeightsError


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
