"""A plain small CNN: the sanity baseline that every FER model here must beat.

Four stages of two 3x3 Conv-BN-ReLU layers and a 2x2 max-pool (VGG's first four stage widths,
scaled by the same ``width``), global average pooling and one linear layer. No pyramid, STN,
super resolution or fastai head: it measures what the data gives a network with none of
PSR's parts. It speaks the family's interface (branch logits ``[B, 1, K]`` and the three
``param_groups`` of the discriminative rates), so the engine, evaluation, checkpoints and
export treat it like any member.
"""

from __future__ import annotations

import torch
from torch import nn

from psr.models.layout import cpu_channels_last
from psr.models.pyramid import Branch, plan_pyramid
from psr.models.vgg import conv_stack, scaled_channels

#: Channel counts of the four stages at width 1; "M" a 2x2 max-pool.
SMALL_CNN_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M")


class SmallCNN(nn.Module):
    """``x: [B, 3, S, S]`` (normalised) -> logits ``[B, 1, K]``; S >= 32, as the vgg16."""

    cpu_channels_last: bool = True  # psr.models.layout

    def __init__(self, num_classes: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.branches: tuple[Branch, ...] = plan_pyramid([1], image_size)  # one full-size view
        self.num_classes = num_classes
        self.image_size = image_size
        self.config = None  # the ModelConfig it was built from, set by build_model
        self.features = conv_stack(SMALL_CNN_CFG, width)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(scaled_channels(512, width), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(cpu_channels_last(x, self.cpu_channels_last))
        return self.head(x).unsqueeze(1)  # [B, 1, K]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """The family's [STN + SR], [high + head], [low]: no STN or SR, the last two stages and
        the linear layer as "high", the first two stages as "low"."""
        split = len(self.features) // 2
        return [
            [],
            [*self.features[split:].parameters(), *self.head.parameters()],
            [*self.features[:split].parameters()],
        ]
