"""The memory layout the PSR networks run in on CPU: channels_last (NHWC).

oneDNN's convolutions, batch norm and pooling are faster on NHWC for narrow layers
(bench/model_speed.py: 1.25-1.5x for the embedded model's training step); at the paper's width
NCHW is 4-7 % faster on the 2-core machine (BENCHMARKS.md), so CPU training at width 1 is best
with ``TrainConfig.channels_last=False``. The math is unchanged. Modules that convert their
input carry a ``cpu_channels_last`` attribute (True by default; ``psr.engine.fit`` on CPU sets
it from ``TrainConfig.channels_last``); on other devices the caller picks the layout.
"""

from __future__ import annotations

import torch
from torch import nn


def cpu_channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """``x`` as channels_last if ``enabled`` and it is a 4-D CPU tensor, else ``x`` itself."""
    if enabled and x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def set_cpu_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch the CPU layout conversion of every submodule that has one; returns ``model``."""
    for module in model.modules():
        if hasattr(module, "cpu_channels_last"):
            module.cpu_channels_last = enabled
    return model
