"""Datasets, samplers and DataLoaders for training and validation.

The training loader yields augmented batches in an order and with augmentations that depend only
on (seed, epoch, rank): resuming, or changing the number of workers, reproduces them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from psr.data.torch_dataset import FERDataset, SeededSampler, SplitLike
from psr.data.transforms import eval_transform, train_transform
from psr.engine.config import TrainConfig
from psr.engine.distributed import DistInfo


@dataclass
class Loaders:
    train: DataLoader
    valid: DataLoader
    train_sampler: SeededSampler
    soft_targets: bool


def fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified random subset with ``fraction`` of each class (at least one image each)."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=keep, replace=False))
    return np.sort(np.concatenate(chosen))


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-sample weights 1 / count(class): every class is drawn equally often on average."""
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)


def train_sampler(dataset: FERDataset, cfg: TrainConfig, dist_info: DistInfo) -> SeededSampler:
    """shuffle: a (distributed) random permutation; balanced: class-balanced draws with
    replacement, each rank drawing its own share. Both reseeded from (seed, epoch) every epoch."""
    generator = torch.Generator()
    per_rank = -(-len(dataset) // dist_info.world_size)  # ceil
    inner: Sampler
    if cfg.sampler == "balanced":
        inner = WeightedRandomSampler(
            balanced_weights(dataset.targets), per_rank, replacement=True, generator=generator
        )
    elif dist_info.enabled:
        inner = DistributedSampler(
            dataset, dist_info.world_size, dist_info.rank, shuffle=True, seed=cfg.seed
        )
    else:
        inner = RandomSampler(dataset, generator=generator)
    # rank in the seed: each rank augments (and, balanced, draws) differently
    seed = cfg.seed + 1_000_003 * dist_info.rank
    return SeededSampler(inner, seed, generator=generator)


def build_loaders(
    train_split: SplitLike,
    valid_split: SplitLike,
    cfg: TrainConfig,
    image_size: int,
    dist_info: DistInfo,
    pin_memory: bool,
) -> Loaders:
    """Training (augmented) and validation (plain, hard labels, sharded by rank) loaders."""
    soft = _use_soft_targets(train_split, cfg)
    indices = fraction_indices(np.asarray(train_split.labels), cfg.data_fraction, cfg.seed)
    train_ds = FERDataset(
        train_split, train_transform(image_size, cfg.augment), soft=soft, indices=indices
    )
    # each rank validates a disjoint shard (no padding duplicates); sums are reduced afterwards
    valid_ds = FERDataset(
        valid_split,
        eval_transform(image_size),
        indices=np.arange(dist_info.rank, len(valid_split.labels), dist_info.world_size),
    )
    sampler = train_sampler(train_ds, cfg, dist_info)
    per_rank = len(sampler)
    common = _loader_options(cfg, pin_memory)
    train = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        # fastai drops the last partial batch (a batch of 1 breaks BatchNorm); keep it when the
        # split is smaller than one batch so tiny runs still train
        drop_last=per_rank > cfg.batch_size,
        **common,
    )
    valid = DataLoader(
        valid_ds, batch_size=cfg.batch_size, sampler=SequentialSampler(valid_ds), **common
    )
    return Loaders(train=train, valid=valid, train_sampler=sampler, soft_targets=soft)


def _use_soft_targets(split: SplitLike, cfg: TrainConfig) -> bool:
    if cfg.loss.targets == "auto":
        return split.soft_targets is not None
    if cfg.loss.targets == "distribution" and split.soft_targets is None:
        raise ValueError(
            "loss.targets='distribution' but the training split has no soft_targets "
            "(prepare it with a vote mode, or use targets='labels')"
        )
    return cfg.loss.targets == "distribution"


def _loader_options(cfg: TrainConfig, pin_memory: bool) -> dict:
    # A private generator for the workers' base seed: creating an iterator then draws nothing
    # from the global RNG (dropout's), so 0 workers, persistent workers or a resumed run all
    # leave it in the same state. Augmentation does not use worker seeds (see SeededSampler).
    generator = torch.Generator().manual_seed(cfg.seed)
    options: dict = {"num_workers": cfg.workers, "pin_memory": pin_memory, "generator": generator}
    if cfg.workers > 0:
        options["persistent_workers"] = cfg.persistent_workers
        options["prefetch_factor"] = cfg.prefetch_factor
    return options
