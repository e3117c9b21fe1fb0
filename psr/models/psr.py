"""The Pyramid with Super Resolution network (Vo et al. 2020) and its fusion rule.

Data flow for ``multiples=[1, 2, 1]`` and input ``[B, 3, S, S]``::

    x --STN--> t [B,3,S,S] --avgpool (no grad)--> low [B,3,S/2,S/2]
    branch 0: low                     -> low[0] -> high -> head -> logits
    branch 1: low --SR x2--> [B,3,S,S] -> low[1] -> high -> head -> logits
    branch 2: t                       -> low[2] -> high -> head -> logits

``low`` holds one copy of the early VGG layers per branch (they see different scales); ``high``
and ``head`` are one module applied to every branch. In eval mode branches whose features have
the same size (SR and full) go through ``high`` and ``head`` as one concatenated batch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from psr.models.head import FASTAI_DROPOUT, build_head
from psr.models.layout import cpu_channels_last
from psr.models.pyramid import Branch, plan_pyramid
from psr.models.sr import build_sr
from psr.models.stn import STN
from psr.models.vgg import split_features, vgg16_bn_features, vgg_out_channels


def fuse(logits: torch.Tensor) -> torch.Tensor:
    """Branch logits ``[B, n_branches, K]`` -> class probabilities ``[B, K]`` (mean of softmax)."""
    if logits.dim() != 3:
        raise ValueError(f"fuse expects logits [B, n_branches, K], got shape {list(logits.shape)}")
    return logits.softmax(dim=-1).mean(dim=1)


class PSRNet(nn.Module):
    """The PSR family's network; use :func:`psr.models.create_model` to build one."""

    #: Run in channels_last on CPU (psr.models.layout); False keeps the input's layout.
    cpu_channels_last: bool = True

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        multiples: list[int],
        stn: bool = True,
        sr: str = "edsr",
        sr_features: int = 64,
        sr_res_blocks: int = 16,
        sr_res_scale: float = 1.0,
        sep_pos: int = 24,
        width: float = 1.0,
        imagenet: bool = False,
        head_dropout: tuple[float, float] = FASTAI_DROPOUT,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.image_size = image_size
        self.config = None  # the ModelConfig it was built from, set by build_model
        self.branches: tuple[Branch, ...] = plan_pyramid(multiples, image_size)
        self.stn = STN(image_size) if stn else nn.Identity()
        sr_scales = [b.scale for b in self.branches if b.kind == "sr"]
        sr_nets = {
            f"x{s}": build_sr(
                sr, s, features=sr_features, res_blocks=sr_res_blocks, res_scale=sr_res_scale
            )
            for s in sr_scales
        }
        # One SR scale (the paper): ``sr`` is that network itself, so an SR state dict loads
        # into ``model.sr`` directly. Otherwise a ModuleDict keyed "x2", "x4" (empty: no SR).
        self.sr: nn.Module = (
            next(iter(sr_nets.values())) if len(sr_nets) == 1 else nn.ModuleDict(sr_nets)
        )
        low, high = split_features(vgg16_bn_features(width, imagenet=imagenet), sep_pos)
        self.low = nn.ModuleList(copy.deepcopy(low) for _ in self.branches)
        self.high = nn.Sequential(high, nn.AdaptiveAvgPool2d(7))
        channels = vgg_out_channels(width)
        self.head = build_head(channels, num_classes, hidden=channels, dropout=head_dropout)

    def sr_net(self, scale: int) -> nn.Module:
        """The network that upsamples the low view by ``scale``."""
        if isinstance(self.sr, nn.ModuleDict):
            return self.sr[f"x{scale}"]
        return self.sr

    def branch_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input image of every branch, ``x: [B, 3, S, S]``."""
        x = cpu_channels_last(x, self.cpu_channels_last)
        x = self.stn(x)  # [B, 3, S, S]
        x = cpu_channels_last(x, self.cpu_channels_last)  # grid_sample returns NCHW
        if len(self.branches) == 1:
            return [x]
        low_size = self.branches[0].size
        # The low view carries no gradient: the low-resolution branches do not train the STN.
        with torch.no_grad():
            low = F.adaptive_avg_pool2d(x, low_size)  # [B, 3, S/f, S/f]
        inputs = []
        for branch in self.branches:
            if branch.kind == "low":
                inputs.append(low)
            elif branch.kind == "sr":
                inputs.append(self.sr_net(branch.scale)(low))  # [B, 3, S/f*m, S/f*m]
            else:
                inputs.append(x)
        return inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 3, S, S]`` (normalised) -> branch logits ``[B, n_branches, K]``."""
        features = [low(inp) for low, inp in zip(self.low, self.branch_inputs(x), strict=True)]
        if self.training:  # BatchNorm statistics are per branch: each branch runs on its own
            logits = [self.head(self.high(f)) for f in features]  # [B, K] each
            return torch.stack(logits, dim=1)
        return torch.stack(self._shared_eval(features), dim=1)

    def _shared_eval(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Branch logits with same-size features (the SR and full branches) concatenated along
        the batch through the shared ``high`` and ``head`` in one call: in eval mode every layer
        there is per sample, so this only saves calls and feeds the GEMMs larger batches."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(features):
            by_shape.setdefault(tuple(f.shape[1:]), []).append(i)
        logits: list[torch.Tensor] = [torch.empty(0)] * len(features)
        for group in by_shape.values():
            batch = (
                torch.cat([features[i] for i in group]) if len(group) > 1 else features[group[0]]
            )
            out = self.head(self.high(batch))  # [len(group) * B, K]
            size = features[group[0]].shape[0]
            for k, i in enumerate(group):
                logits[i] = out[k * size : (k + 1) * size]
        return logits

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Parameters for discriminative learning rates: [STN + SR], [high + head], [low]."""
        return [
            [*self.stn.parameters(), *self.sr.parameters()],
            [*self.high.parameters(), *self.head.parameters()],
            [*self.low.parameters()],
        ]


class FusedModel(nn.Module):
    """Wraps a PSR network to return fused class probabilities ``[B, K]`` (for export/serving)."""

    def __init__(self, model: PSRNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fuse(self.model(x))  # [B, K]
