import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from psr.data.torch_dataset import FERDataset, SeededSampler
from psr.data.transforms import eval_transform, train_transform


@dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray
    soft_targets: np.ndarray | None
    class_names: tuple[str, ...] = ("a", "b", "c")


def _split(tmp_path, n=6, channels=1, soft=True) -> Split:
    path = tmp_path / "train.npy"
    data = np.random.default_rng(0).integers(0, 256, size=(n, 12, 12, channels), dtype=np.uint8)
    np.save(path, data)
    images = np.load(path, mmap_mode="r")
    labels = np.arange(n) % 3
    targets = np.eye(3, dtype=np.float32)[labels] * 0.8 + 0.2 / 3 if soft else None
    return Split(images, labels, targets)


def test_items_hard_and_soft(tmp_path):
    split = _split(tmp_path)
    hard = FERDataset(split, eval_transform(16))
    x, y = hard[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    soft = FERDataset(split, eval_transform(16), soft=True)
    _, t = soft[4]
    assert t.dtype == torch.float32 and t.shape == (3,)
    assert torch.allclose(t, torch.from_numpy(split.soft_targets[4]))


def test_indices_select_rows(tmp_path):
    split = _split(tmp_path)
    ds = FERDataset(split, eval_transform(16), indices=[5, 1])
    assert len(ds) == 2 and ds[0][1] == 2 and list(ds.targets) == [2, 1]
    with pytest.raises(ValueError, match="out of range"):
        FERDataset(split, eval_transform(16), indices=[6])


def test_soft_without_targets_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="soft_targets"):
        FERDataset(_split(tmp_path, soft=False), eval_transform(16), soft=True)


def test_pickle_reopens_the_memmap_instead_of_copying(tmp_path):
    ds = FERDataset(_split(tmp_path, n=600), eval_transform(16))
    blob = pickle.dumps(ds)
    assert len(blob) < ds.images.nbytes / 2
    clone = pickle.loads(blob)
    assert isinstance(clone.images, np.memmap)
    assert torch.equal(clone[3][0], ds[3][0])


def test_seeded_items_are_reproducible_across_worker_layouts(tmp_path):
    ds = FERDataset(_split(tmp_path, channels=3), train_transform(16))

    def batches(workers: int) -> torch.Tensor:
        sampler = SeededSampler(SequentialSampler(range(len(ds))), seed=3)
        sampler.set_epoch(2)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
        return torch.cat([x for x, _ in loader])

    single = batches(0)
    assert torch.equal(single, batches(2))


def test_seeded_sampler_changes_with_epoch_and_reseeds_the_generator():
    gen = torch.Generator()
    inner = torch.utils.data.RandomSampler(range(10), generator=gen)
    sampler = SeededSampler(inner, seed=1, generator=gen)
    sampler.set_epoch(0)
    first = list(sampler)
    assert list(sampler) == first  # iterating twice (e.g. a tqdm that calls iter early) agrees
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert sorted(i for i, _ in first) == list(range(10))
