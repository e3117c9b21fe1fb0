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


#: fastai v1's ``create_head(ps=0.5)``: dropout ps/2 before the first Linear, ps before the last.
FASTAI_DROPOUT: tuple[float, float] = (0.25, 0.5)


def build_head(
    in_channels: int,
    num_classes: int,
    hidden: int = 512,
    dropout: tuple[float, float] = FASTAI_DROPOUT,
) -> nn.Sequential:
    """ConcatPool, Flatten, BN, Dropout, Linear, ReLU, BN, Dropout, Linear -> [B, K].

    ``dropout`` is the probability of each Dropout (the paper's .25 and .5). The layer indices
    do not depend on it (a probability of 0 keeps its Dropout), so weight files load either way.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(dropout) != 2 or not all(0 <= p < 1 for p in dropout):
        raise ValueError(f"dropout must be two probabilities in [0, 1), got {list(dropout)}")
    pooled = 2 * in_channels
    head = nn.Sequential(
        ConcatPool(),
        nn.Flatten(),  # [B, 2C]
        nn.BatchNorm1d(pooled),
        nn.Dropout(dropout[0]),
        nn.Linear(pooled, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout[1]),
        nn.Linear(hidden, num_classes),  # [B, K]
    )
    # PyTorch's default init, as the official head: PyramidShare builds it with fastai's
    # create_cnn_model, which (unlike cnn_learner) applies no kaiming init to the head.
    return head
