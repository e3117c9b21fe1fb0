"""torch Dataset over a prepared split, and a sampler wrapper that makes augmentation reproducible.

The images stay a memory-mapped ``[N, H, W, C]`` uint8 array: workers forked by a DataLoader share
its pages, and a pickled dataset (spawn/forkserver workers) carries the file name and reopens it
instead of copying the whole array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class SplitLike(Protocol):
    """What :class:`FERDataset` reads from ``psr.data.prepared.PreparedSplit``."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    soft_targets: np.ndarray | None  # float32 [N, K]
    class_names: Sequence[str]


class FERDataset(Dataset):
    """``dataset[i]`` -> (image float ``[3, S, S]``, target): the int label, or with ``soft=True``
    the float ``[K]`` target distribution of the split (e.g. FER+ crowd votes).

    ``indices`` selects a subset (a fold, a data fraction); ``dataset[i]`` is row ``indices[i]``.
    An item may also be ``(i, seed)`` (see :class:`SeededSampler`): the transform is reseeded with
    ``seed`` first, so the augmentation of that sample is reproducible in any worker.
    """

    def __init__(
        self,
        split: SplitLike,
        transform: Callable[[np.ndarray], torch.Tensor],
        soft: bool = False,
        indices: Sequence[int] | np.ndarray | None = None,
    ):
        count = len(split.images)
        if len(split.labels) != count:
            raise ValueError(f"split has {count} images but {len(split.labels)} labels")
        if soft and split.soft_targets is None:
            raise ValueError(
                "soft=True but the split has no soft_targets (no target_<class> columns)"
            )
        self.images = split.images
        self.labels = np.asarray(split.labels, dtype=np.int64)
        self.soft_targets = np.asarray(split.soft_targets, dtype=np.float32) if soft else None
        self.class_names = tuple(split.class_names)
        self.transform = transform
        self.indices = np.arange(count) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= count):
            raise ValueError(f"indices out of range 0..{count - 1}")

    @property
    def targets(self) -> np.ndarray:
        """Hard labels of the selected rows, in dataset order (for class-balanced sampling)."""
        return self.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, Any]:
        if isinstance(item, tuple):
            item, seed = item
            self.transform.reseed(seed)
        row = int(self.indices[item])
        image = self.transform(np.asarray(self.images[row]))  # [H, W, C] uint8 -> [3, S, S] float
        if self.soft_targets is not None:
            return image, torch.from_numpy(self.soft_targets[row].copy())
        return image, int(self.labels[row])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        images = self.images
        if isinstance(images, np.memmap) and images.filename and images.flags.c_contiguous:
            state["images"] = _MemmapRef(
                str(images.filename), images.dtype.str, images.shape, images.offset
            )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["images"], _MemmapRef):
            state["images"] = state["images"].open()
        self.__dict__.update(state)


class _MemmapRef:
    """Enough to reopen a read-only memmap in another process."""

    def __init__(self, filename: str, dtype: str, shape: tuple[int, ...], offset: int):
        self.filename, self.dtype, self.shape, self.offset = filename, dtype, shape, offset

    def open(self) -> np.memmap:
        return np.memmap(
            self.filename,
            dtype=np.dtype(self.dtype),
            mode="r",
            shape=self.shape,
            offset=self.offset,
        )


class SeededSampler(Sampler):
    """Wraps a sampler of indices to yield ``(index, seed)`` pairs, the seeds drawn from
    ``(seed, epoch)``: augmentation is then a function of the seed, epoch and position only, the
    same with 0 or 8 workers, persistent or not, and after a resume.

    ``set_epoch`` must be called before each epoch: it is forwarded to a DistributedSampler, and
    ``generator`` (the one a RandomSampler or WeightedRandomSampler draws from) is reseeded from
    (seed, epoch) at every iteration, so iterating twice gives the same order.
    """

    def __init__(self, sampler: Sampler, seed: int, generator: torch.Generator | None = None):
        self.sampler = sampler
        self.seed = seed
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.generator is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
            self.generator.manual_seed(int(seed))
        rng = np.random.default_rng([self.seed, self.epoch])
        seeds = rng.integers(0, 2**63 - 1, size=len(self.sampler))
        for index, seed in zip(self.sampler, seeds, strict=True):
            yield int(index), int(seed)
