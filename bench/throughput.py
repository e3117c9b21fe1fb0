"""Throughput measurements behind the ``bench/`` scripts: how many images per second the model
trains on, and how many the augmenting DataLoader delivers (it must deliver more).

Benchmark code, not part of the package: ``python bench/<script>.py`` puts ``bench/`` on
``sys.path``, so the scripts import it as ``throughput`` (tests/bench/conftest.py loads it so).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from psr.data.torch_dataset import FERDataset, SeededSampler
from psr.data.transforms import AugmentConfig, train_transform
from psr.engine.config import PhaseConfig
from psr.engine.distributed import DistInfo
from psr.engine.runtime import Runtime, resolve_amp
from psr.engine.schedule import build_one_cycle, build_optimizer
from psr.losses import build_loss


class RandomSplit:
    """An in-memory stand-in for a prepared split: random uint8 faces, balanced labels."""

    def __init__(self, count: int, side: int = 48, channels: int = 1, classes: int = 8):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=(count, side, side, channels), dtype=np.uint8)
        self.labels = np.arange(count, dtype=np.int64) % classes
        self.soft_targets = None
        self.class_names = tuple(f"class{i}" for i in range(classes))


def training_rate(
    model: nn.Module,
    image_size: int,
    batch_size: int,
    steps: int,
    device: torch.device,
    amp: str = "off",
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 2,
) -> float:
    """Images/s of full training steps (forward, loss, backward, AdamW, one-cycle) on batches
    already on ``device``: the rate the model consumes data at."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    rt = Runtime(device, DistInfo(), resolve_amp(amp, device), memory_format)
    model = model.to(device=device, memory_format=memory_format).train()
    phase = PhaseConfig()
    optimizer = build_optimizer(model, phase)
    scheduler = build_one_cycle(optimizer, phase, warmup + steps)
    scaler = rt.grad_scaler()
    loss_fn = build_loss("ce", model.num_classes).to(device)
    step_model = torch.compile(model) if compile else model
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, model.num_classes, (batch_size,), device=device)

    def step() -> None:
        with rt.autocast():
            logits = step_model(images)  # [B, n_branches, K]
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

    for _ in range(warmup):
        step()
    rt.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    rt.synchronize()
    return batch_size * steps / (time.perf_counter() - start)


def loader_rate(
    split: RandomSplit,
    image_size: int,
    batch_size: int,
    batches: int,
    workers: int,
    aug: AugmentConfig | None = None,
    pin_memory: bool = False,
) -> float:
    """Images/s the training DataLoader (augmentation, normalisation, collation) delivers."""
    dataset = FERDataset(split, train_transform(image_size, aug))
    sampler = SeededSampler(torch.utils.data.RandomSampler(dataset), seed=0)
    options = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        **options,
    )
    iterator = _forever(loader, sampler)
    next(iterator)  # start the workers before timing
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch_size * batches / (time.perf_counter() - start)


def _forever(loader: DataLoader, sampler: SeededSampler) -> Iterator[object]:
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
