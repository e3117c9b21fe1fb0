"""SR networks: shapes, the official EDSR key layout, and SR weights reaching the model."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from psr.models import build_sr, create_model, load_sr_state_dict
from psr.models.sr import EDSR

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def official_edsr_state_dict(scale: int, features: int = 64, blocks: int = 16) -> dict:
    """A state dict with EDSR-PyTorch's names and shapes, written out independently of EDSR."""
    g = torch.Generator().manual_seed(scale)

    def conv(cin: int, cout: int, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(cout, cin, k, k, generator=g), torch.randn(cout, generator=g)

    layers = {"head.0": conv(3, features)}
    for i in range(blocks):
        layers[f"body.{i}.body.0"] = conv(features, features)
        layers[f"body.{i}.body.2"] = conv(features, features)
    layers[f"body.{blocks}"] = conv(features, features)
    if scale == 4:
        layers["tail.0.0"] = conv(features, 4 * features)
        layers["tail.0.2"] = conv(features, 4 * features)
    else:
        layers["tail.0.0"] = conv(features, scale * scale * features)
    layers["tail.1"] = conv(features, 3)
    layers["sub_mean"] = conv(3, 3, 1)
    layers["add_mean"] = conv(3, 3, 1)
    state = {}
    for name, (w, b) in layers.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b
    return state


MEAN_SHIFT_KEYS = ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kind", ["edsr", "espcn", "bicubic", "bilinear"])
def test_sr_output_is_scaled(kind: str, scale: int) -> None:
    net = build_sr(kind, scale, features=8, res_blocks=2)
    assert net(torch.randn(2, 3, 25, 24)).shape == (2, 3, 25 * scale, 24 * scale)


def test_interpolation_is_plain_resizing() -> None:
    x = torch.randn(1, 3, 10, 10)
    expected = F.interpolate(x, size=(20, 20), mode="bicubic", align_corners=False)
    torch.testing.assert_close(build_sr("bicubic", 2)(x), expected)
    assert not list(build_sr("bilinear", 2).parameters())


def test_build_sr_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown sr kind 'srgan'.*edsr"):
        build_sr("srgan", 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        build_sr("edsr", 5)


@pytest.mark.parametrize("scale", [2, 4])
def test_official_edsr_layout_loads_and_reports_mean_shift(scale: int, caplog) -> None:
    state = official_edsr_state_dict(scale)
    net = EDSR(scale)  # the baseline: 64 features, 16 blocks
    with caplog.at_level(logging.INFO, logger="psr.models.weights"):
        ignored = load_sr_state_dict(net, state)
    assert sorted(ignored) == sorted(MEAN_SHIFT_KEYS)
    assert "sub_mean.weight" in caplog.text
    loaded = net.state_dict()
    assert set(loaded) == set(state) - set(MEAN_SHIFT_KEYS)
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key])


def test_wrong_sr_weights_are_an_error() -> None:
    with pytest.raises(ValueError, match="SR weights do not fit EDSR"):
        load_sr_state_dict(EDSR(2), official_edsr_state_dict(4))


def test_sr_pretraining_output_loads_into_the_model(tmp_path) -> None:
    pretrained = build_sr("edsr", 2, features=8, res_blocks=1)
    torch.nn.init.constant_(pretrained.head[0].bias, 0.5)
    path = tmp_path / "sr_x2.pt"
    torch.save(pretrained.state_dict(), path)
    model = create_model("psr", image_size=64, **SMALL)
    model.sr.load_state_dict(torch.load(path, weights_only=True))  # same module: direct load
    from_config = create_model("psr", image_size=64, sr_weights=str(path), **SMALL)
    torch.testing.assert_close(from_config.sr.head[0].bias, torch.full((8,), 0.5))
    with pytest.raises(FileNotFoundError, match="SR weights file not found"):
        create_model("psr", image_size=64, sr_weights=str(tmp_path / "nope.pt"), **SMALL)


def test_official_file_loads_through_the_config(tmp_path) -> None:
    path = tmp_path / "edsr_baseline_x2-1bc95232.pt"
    state = official_edsr_state_dict(2)
    torch.save(state, path)
    model = create_model("psr", image_size=64, width=0.125, sr_weights={2: str(path)})
    torch.testing.assert_close(model.sr.tail[1].weight, state["tail.1.weight"])


def test_espcn_is_the_official_srnet3_shared_across_channels() -> None:
    torch.manual_seed(0)
    net = build_sr("espcn", 2, features=16)
    convs = [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    assert convs == [(1, 16, 5), (16, 16, 3), (16, 8, 3), (8, 4, 3)]
    x = torch.randn(2, 3, 12, 12)
    out = net(x)
    assert out.shape == (2, 3, 24, 24)
    # one network for every channel: swapping input channels swaps the outputs
    torch.testing.assert_close(net(x[:, [2, 0, 1]]), out[:, [2, 0, 1]])
    torch.testing.assert_close(net(x[:, :1].expand(-1, 3, -1, -1))[:, 2], out[:, 0])
