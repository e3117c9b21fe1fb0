"""Super-resolution networks that upsample the low-resolution pyramid view.

- :class:`EDSR`: EDSR-baseline (Lim et al. 2017), the paper's choice. Module names follow the
  official EDSR-PyTorch layout (``head.0``, ``body.<i>.body.0/2``, ``body.<n>``, ``tail.0.*``,
  ``tail.1``) so its released state dicts load; the mean-shift layers are left out because the
  network works on already normalised tensors.
- :class:`ESPCN`: the official ``SRNet3`` (outside_collection), an ESPCN-style sub-pixel network
  (Shi et al. 2016) of earlier PSR versions, run on each colour channel with shared weights.
- :class:`Interpolation`: bicubic/bilinear resizing, the "no super resolution" ablation.

:func:`build_sr` is the one constructor, used by the PSR model and by SR pre-training alike, so a
pre-trained state dict loads into the model's SR network unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psr.models.layout import cpu_channels_last

#: Kinds accepted by :func:`build_sr`.
SR_KINDS: tuple[str, ...] = ("edsr", "espcn", "bicubic", "bilinear")
#: Upscaling factors the learned networks support.
SR_SCALES: tuple[int, ...] = (2, 3, 4)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip; ``body.0`` and ``body.2`` hold the weights."""

    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(features, features), nn.ReLU(inplace=True), _conv3x3(features, features)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.body(x)
        if self.res_scale != 1.0:  # the EDSR-baseline's 1.0 would cost a full-size multiply
            residual = residual * self.res_scale
        return x + residual


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: x2 and x3 in one conv + PixelShuffle, x4 as two x2 steps."""

    def __init__(self, scale: int, features: int) -> None:
        if scale not in SR_SCALES:
            raise ValueError(f"EDSR scale must be one of {SR_SCALES}, got {scale}")
        steps = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = []
        for step in steps:
            layers += [_conv3x3(features, step * step * features), nn.PixelShuffle(step)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR-baseline without mean shift: head conv, residual body with global skip, upsampler."""

    #: Run in channels_last on CPU (psr.models.layout); False keeps the input's layout.
    cpu_channels_last: bool = True

    def __init__(
        self, scale: int = 2, features: int = 64, res_blocks: int = 16, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(_conv3x3(3, features))
        self.body = nn.Sequential(
            *[ResBlock(features, res_scale) for _ in range(res_blocks)],
            _conv3x3(features, features),
        )
        self.tail = nn.Sequential(Upsampler(scale, features), _conv3x3(features, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(cpu_channels_last(x, self.cpu_channels_last))  # [B, F, h, w]
        x = x + self.body(x)  # global skip
        return self.tail(x)  # [B, 3, h*scale, w*scale]


class ESPCN(nn.Module):
    """The official SRNet3: one single-channel sub-pixel net shared by R, G and B.

    conv5x5(1->F) ReLU, conv3x3(F->F) ReLU, conv3x3(F->F/2) ReLU, conv3x3(F/2->r^2), PixelShuffle;
    orthogonal init (ReLU gain on the first three convs), as the official code.
    """

    def __init__(self, scale: int = 2, features: int = 64) -> None:
        super().__init__()
        if scale not in SR_SCALES:
            raise ValueError(f"ESPCN scale must be one of {SR_SCALES}, got {scale}")
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(1, features, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features // 2, scale * scale, kernel_size=3, padding=1),
            nn.PixelShuffle(scale),
        )
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        for conv in convs[:-1]:
            nn.init.orthogonal_(conv.weight, nn.init.calculate_gain("relu"))
        nn.init.orthogonal_(convs[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.body(x.reshape(b * c, 1, h, w))  # every channel through the same net
        return out.reshape(b, c, h * self.scale, w * self.scale)  # [B, C, h*scale, w*scale]


class Interpolation(nn.Module):
    """Parameter-free resize by ``scale`` (the paper's interpolation ablation)."""

    def __init__(self, scale: int = 2, mode: str = "bicubic") -> None:
        super().__init__()
        if mode not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation mode must be 'bicubic' or 'bilinear', got {mode!r}")
        self.scale = scale
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)


def build_sr(
    kind: str, scale: int, *, features: int = 64, res_blocks: int = 16, res_scale: float = 1.0
) -> nn.Module:
    """The SR network ``kind`` for upscaling by ``scale``; size knobs apply to learned kinds."""
    if not isinstance(scale, int) or scale < 2:
        raise ValueError(f"SR scale must be an integer >= 2, got {scale!r}")
    if kind in ("edsr", "espcn"):
        if features < 2 or (kind == "edsr" and res_blocks < 0):
            raise ValueError(f"bad SR size: features={features}, res_blocks={res_blocks}")
        if kind == "edsr":
            return EDSR(scale, features, res_blocks, res_scale)
        return ESPCN(scale, features)
    if kind in ("bicubic", "bilinear"):
        return Interpolation(scale, kind)
    raise ValueError(f"unknown sr kind {kind!r}; valid: {list(SR_KINDS)}")
