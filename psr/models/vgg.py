"""The vgg16_bn feature extractor, optionally narrower, split into a low and a high part.

The width multiplier is ours, not the paper's: it scales every channel count so a small variant
trains on a CPU. ``width=1.0`` is exactly torchvision's ``vgg16_bn().features``.

The layers are built here rather than with torchvision's ``make_layers``: importing torchvision
imports ``torch._dynamo`` (about 2.5 s of every stage's and ``psr`` command's start on a 2-core
CPU), so torchvision is imported only to fetch the ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Indices of ``vgg16_bn().features`` where the network may be split into low and high parts.
VGG_SPLIT_POINTS: tuple[int, ...] = (3, 6, 10, 14, 17, 20, 24, 27, 30, 34, 37)
#: Number of 2x2 max-pools in vgg16_bn's features: a branch must be at least 2**5 px wide.
VGG_NUM_POOLS = 5
#: vgg16's configuration "D": output channels of each 3x3 convolution, "M" a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, round(channels * width))


def vgg_out_channels(width: float) -> int:
    """Channels of the last feature map (512 at width 1)."""
    return scaled_channels(512, width)


def _init_like_torchvision(features: nn.Sequential) -> None:
    """The initialisation torchvision's ``VGG`` applies to its feature layers."""
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn_relu_layers(cfg: Sequence[int | str]) -> nn.Sequential:
    """Conv3x3-BN-ReLU per channel count and MaxPool2d(2) per "M", indexed as torchvision's
    ``make_layers(cfg, batch_norm=True)`` (so its state dicts load)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for c in cfg:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(True)]
            in_channels = c
    return nn.Sequential(*layers)


def _imagenet_features() -> nn.Sequential:
    from torchvision.models import VGG16_BN_Weights, vgg16_bn

    try:
        return vgg16_bn(weights=VGG16_BN_Weights.IMAGENET1K_V1).features
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        url = VGG16_BN_Weights.IMAGENET1K_V1.url
        raise RuntimeError(
            f"pretrained: imagenet could not get torchvision's vgg16_bn ImageNet weights ({err}). "
            f"Without network access, download {url} elsewhere into "
            f"{torch.hub.get_dir()}/checkpoints/, or set pretrained to 'none' or a local file."
        ) from err


def vgg16_bn_features(width: float = 1.0, imagenet: bool = False) -> nn.Sequential:
    """``vgg16_bn().features`` (44 modules) with every channel count scaled by ``width``."""
    if imagenet:
        if width != 1.0:
            raise ValueError(f"pretrained: imagenet needs width 1.0 (got width={width})")
        return _imagenet_features()
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return conv_stack(_VGG16_CFG, width)


def conv_stack(cfg: Sequence[int | str], width: float = 1.0) -> nn.Sequential:
    """VGG-style layers for ``cfg`` (channel counts scaled by ``width``, "M" a 2x2 max-pool),
    initialised as torchvision's VGG."""
    features = _conv_bn_relu_layers([c if c == "M" else scaled_channels(c, width) for c in cfg])
    _init_like_torchvision(features)
    return features


def split_features(features: nn.Sequential, sep_pos: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(low, high) = (features[:sep_pos], features[sep_pos:])."""
    if sep_pos not in VGG_SPLIT_POINTS:
        raise ValueError(
            f"sep_pos={sep_pos} is not a vgg16_bn split point; valid: {VGG_SPLIT_POINTS}"
        )
    return features[:sep_pos], features[sep_pos:]
