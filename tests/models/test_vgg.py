"""The VGG16-bn backbone: torchvision equivalence, width, splits, ImageNet weights offline."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

import psr.models.vgg as vgg
from psr.models import create_model


def test_full_width_features_match_torchvision() -> None:
    ours = vgg.vgg16_bn_features(1.0)
    theirs = torchvision.models.vgg16_bn(weights=None).features
    assert [repr(m) for m in ours] == [repr(m) for m in theirs]  # kernels, strides, padding
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }


@pytest.mark.parametrize("width", [0.125, 0.25, 0.5])
def test_width_scales_every_channel_count(width: float) -> None:
    ours = vgg.vgg16_bn_features(width)
    full = vgg.vgg16_bn_features(1.0)
    for a, b in zip(ours, full, strict=True):
        if isinstance(a, torch.nn.Conv2d):
            assert a.out_channels == round(b.out_channels * width)
    assert vgg.vgg_out_channels(width) == round(512 * width)


def test_split_points() -> None:
    features = vgg.vgg16_bn_features(0.125)
    low, high = vgg.split_features(features, 24)
    assert len(low) == 24 and len(high) == 20
    assert isinstance(low[23], torch.nn.MaxPool2d)  # conv1_1 .. conv3_3 + third max-pool
    with pytest.raises(ValueError, match="sep_pos=25 is not a vgg16_bn split point"):
        vgg.split_features(features, 25)
    assert set(vgg.VGG_SPLIT_POINTS) == {3, 6, 10, 14, 17, 20, 24, 27, 30, 34, 37}
    for sep_pos in (3, 6, 24, 37):  # the first, a max-pool, the paper's, the last
        model = create_model("psr", sep_pos=sep_pos, image_size=64, width=0.125, sr_res_blocks=0)
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3, 8)


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch) -> None:
    def offline(weights):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "vgg16_bn", offline)
    with pytest.raises(RuntimeError, match=r"pretrained: imagenet could not get .*vgg16_bn"):
        create_model("vgg16", pretrained="imagenet", image_size=64)


def test_imagenet_weights_are_requested_from_torchvision(monkeypatch) -> None:
    requested = []
    untrained = torchvision.models.vgg16_bn

    def fake(weights):
        requested.append(weights)
        model = untrained(weights=None)
        torch.nn.init.constant_(model.features[0].bias, 0.25)
        return model

    monkeypatch.setattr(torchvision.models, "vgg16_bn", fake)
    model = create_model("psr", pretrained="imagenet", image_size=64)
    assert requested == [torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1]
    for low in model.low:
        torch.testing.assert_close(low[0].bias, torch.full((64,), 0.25))


def test_imagenet_weights_need_full_width() -> None:
    with pytest.raises(ValueError, match=r"pretrained='imagenet' needs width=1.0 \(got width=0.25"):
        create_model("psr", pretrained="imagenet", width=0.25)


def test_building_a_model_does_not_import_torchvision() -> None:
    """torchvision imports torch._dynamo: seconds of every command's start."""
    import subprocess
    import sys

    code = (
        "import sys; from psr.models import create_model; create_model('psr', image_size=64,"
        " width=0.125); print('torchvision' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"
