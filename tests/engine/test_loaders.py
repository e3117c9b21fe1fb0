import numpy as np
import torch

from psr.data.torch_dataset import FERDataset
from psr.data.transforms import eval_transform
from psr.engine.distributed import DistInfo
from psr.engine.loaders import build_loaders, fraction_indices, train_sampler


def test_balanced_sampler_draws_classes_evenly(kit):
    split = kit.make_split(30)
    split.labels = np.array([0] * 24 + [1] * 4 + [2] * 2)
    dataset = FERDataset(split, eval_transform(8))
    sampler = train_sampler(dataset, kit.tiny_config(sampler="balanced"), DistInfo())
    drawn = []
    for epoch in range(100):
        sampler.set_epoch(epoch)
        drawn += [int(split.labels[i]) for i, _ in sampler]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.03)


def test_shuffle_sampler_is_a_permutation_that_changes_per_epoch(kit):
    dataset = FERDataset(kit.make_split(20), eval_transform(8))
    sampler = train_sampler(dataset, kit.tiny_config(), DistInfo())
    sampler.set_epoch(0)
    first = [i for i, _ in sampler]
    sampler.set_epoch(1)
    second = [i for i, _ in sampler]
    assert sorted(first) == list(range(20)) and first != second


def test_distributed_ranks_share_the_data_without_overlap(kit):
    dataset = FERDataset(kit.make_split(20), eval_transform(8))
    cfg = kit.tiny_config()
    shards = []
    for rank in range(2):
        sampler = train_sampler(dataset, cfg, DistInfo(rank=rank, world_size=2))
        sampler.set_epoch(3)
        shards.append({i for i, _ in sampler})
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(range(20))


def test_data_fraction_is_stratified_and_deterministic():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    picked = fraction_indices(labels, 0.1, seed=0)
    assert np.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert np.array_equal(picked, fraction_indices(labels, 0.1, seed=0))
    assert len(fraction_indices(labels, 1.0, seed=0)) == 100


def test_loaders_give_normalised_batches_and_hard_validation_labels(kit):
    cfg = kit.tiny_config(loss={"name": "soft_ce"}, data_fraction=0.5)
    loaders = build_loaders(
        kit.make_split(24, soft=True), kit.make_split(10), cfg, 16, DistInfo(), pin_memory=False
    )
    assert loaders.soft_targets
    loaders.train_sampler.set_epoch(0)
    images, targets = next(iter(loaders.train))
    assert images.shape == (8, 3, 16, 16) and targets.shape == (8, 3)
    assert len(loaders.train.dataset) == 12
    _, labels = next(iter(loaders.valid))
    assert labels.dtype == torch.int64
