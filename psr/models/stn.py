"""Spatial transformer (Jaderberg et al. 2015) in the shape of the PyTorch STN tutorial.

It learns one 2x3 affine transform per image and resamples the image with it, so that the
classifier sees a roughly aligned face. It starts as the identity transform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _localisation_size(image_size: int) -> int:
    """Side of the localisation feature map: conv k7 -> pool 2 -> conv k5 -> pool 2."""
    return ((image_size - 6) // 2 - 4) // 2


class STN(nn.Module):
    """Affine spatial transformer; output has the input's size. Identity at initialisation."""

    def __init__(self, image_size: int, hidden: int = 32) -> None:
        super().__init__()
        self.check_image_size(image_size)
        side = _localisation_size(image_size)
        self.localisation = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=7),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(10 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 6),
        )
        # Zero weights and an identity bias: the first forward passes the image through unchanged.
        nn.init.zeros_(self.regressor[-1].weight)
        with torch.no_grad():
            self.regressor[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    @staticmethod
    def check_image_size(image_size: int) -> None:
        """ValueError if the localisation network would shrink ``image_size`` to nothing."""
        if _localisation_size(image_size) < 1:
            raise ValueError(f"image_size={image_size} is too small for the STN (needs >= 18)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: bf16 keeps 8 significant bits, so grid coordinates in
        # [-1, 1] would land up to ~0.2 px off at S = 96 and the warp would jitter.
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays
            theta = self.regressor(self.localisation(x)).view(-1, 2, 3)  # [B, 2, 3]
            grid = F.affine_grid(theta, list(x.shape), align_corners=True)  # [B, S, S, 2]
            return F.grid_sample(x, grid, align_corners=True)  # [B, 3, S, S]
