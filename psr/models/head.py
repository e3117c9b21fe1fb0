"""The classification head shared by all branches (fastai v1's default ``create_head``)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatPool(nn.Module):
    """Adaptive max- and average-pool to 1x1, concatenated: [B, C, h, w] -> [B, 2C, 1, 1].

    Max first, as fastai's ``AdaptiveConcatPool2d``: the first BatchNorm and Linear of an
    official (fastai) head expect that order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx = nn.functional.adaptive_max_pool2d(x, 1)
        avg = nn.functional.adaptive_avg_pool2d(x, 1)
        return torch.cat([mx, avg], dim=1)


def build_head(in_channels: int, num_classes: int, hidden: int = 512) -> nn.Sequential:
    """ConcatPool, Flatten, BN, Dropout .25, Linear, ReLU, BN, Dropout .5, Linear -> [B, K]."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    pooled = 2 * in_channels
    head = nn.Sequential(
        ConcatPool(),
        nn.Flatten(),  # [B, 2C]
        nn.BatchNorm1d(pooled),
        nn.Dropout(0.25),
        nn.Linear(pooled, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),  # [B, K]
    )
    # PyTorch's default init, as the official head: PyramidShare builds it with fastai's
    # create_cnn_model, which (unlike cnn_learner) applies no kaiming init to the head.
    return head
