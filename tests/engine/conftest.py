"""Tiny stand-ins for the engine tests: a learnable in-memory split and a two-branch model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from psr.data.transforms import AugmentConfig
from psr.engine import PhaseConfig, TrainConfig
from psr.models import ModelConfig

CLASSES = ("neutral", "happiness", "surprise")
SIZE = 16


@dataclass
class MemorySplit:
    """What fit reads from psr.data.prepared.PreparedSplit."""

    images: np.ndarray
    labels: np.ndarray
    soft_targets: np.ndarray | None
    class_names: tuple[str, ...] = CLASSES


def make_split(n: int, seed: int = 0, channels: int = 1, soft: bool = False) -> MemorySplit:
    """Class c = a bright band in column third c, plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 80, size=(n, SIZE, SIZE, channels), dtype=np.uint8)
    third = SIZE // 3
    for i, c in enumerate(labels):
        images[i, :, c * third : (c + 1) * third] += 150
    targets = None
    if soft:
        targets = np.full((n, len(CLASSES)), 0.1, dtype=np.float32)
        targets[np.arange(n), labels] = 0.8
    return MemorySplit(images, labels.astype(np.int64), targets)


class TinyPyramid(nn.Module):
    """Returns branch logits [B, n_branches, K] and has the three PSR parameter groups."""

    def __init__(self, num_classes: int = len(CLASSES), branches: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.image_size = SIZE
        self.stn = nn.Conv2d(3, 3, kernel_size=1)
        self.low = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            for _ in range(branches)
        )
        self.high = nn.Sequential(nn.AdaptiveAvgPool2d((1, 3)), nn.Flatten())  # [B, 12]
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn(x)
        return torch.stack([self.head(self.high(low(x))) for low in self.low], dim=1)

    def param_groups(self) -> list[list[nn.Parameter]]:
        return [
            list(self.stn.parameters()),
            [*self.high.parameters(), *self.head.parameters()],
            list(self.low.parameters()),
        ]


def tiny_model(seed: int = 0) -> TinyPyramid:
    torch.manual_seed(seed)
    return TinyPyramid()


#: save_model validates the stored config; the stand-in's best.pt is not loaded back.
MODEL_CONFIG = ModelConfig(num_classes=len(CLASSES), image_size=64).model_dump()

NO_AUG = AugmentConfig(flip=False, rotate=0, zoom=1.0, lighting=0, warp=0)


def tiny_config(epochs1: int = 2, epochs2: int = 1, **overrides) -> TrainConfig:
    lrs = (1e-3, 5e-2, 5e-2)
    fields = {
        "phase1": PhaseConfig(epochs=epochs1, lrs=lrs),
        "phase2": PhaseConfig(epochs=epochs2, optimizer="sgd", lrs=lrs),
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "progress": False,
        "augment": AugmentConfig(rotate=10, zoom=1.1),
        "loss": {"name": "ce", "targets": "labels"},
        **overrides,
    }
    return TrainConfig(**fields)


@pytest.fixture(autouse=True)
def _one_thread():
    """Bitwise-reproducible CPU kernels and a light footprint on the shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kit():
    """The stand-ins above, for tests (importlib mode cannot import conftest by name)."""

    class Kit:
        pass

    k = Kit()
    k.make_split, k.tiny_model, k.tiny_config = make_split, tiny_model, tiny_config
    k.model_config, k.no_aug, k.classes, k.size = MODEL_CONFIG, NO_AUG, CLASSES, SIZE
    return k
