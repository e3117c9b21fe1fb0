"""Eval-mode folding of each BatchNorm2d into the Conv2d before it (inference only).

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
with rescaled weights and a shifted bias: the fused network computes the same function with one
pass over each feature map fewer. Training needs the BatchNorm layers, so this works on a copy.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ``Conv2d`` followed directly by a
    ``BatchNorm2d`` in an ``nn.Sequential`` folded into one conv (the BatchNorm becomes an
    ``Identity``, so module indices and names stay). ``model`` itself is unchanged."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return fused
