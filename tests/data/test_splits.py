from collections import Counter

import numpy as np
import pytest

from psr.data.splits import stratified_folds, validation_mask


def test_folds_are_stratified_seeded_and_cover_everything():
    labels = np.repeat(np.arange(4), [10, 20, 5, 3])
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(Counter(folds).values()) == [7, 7, 8, 8, 8]
    for cls, n in zip(range(4), [10, 20, 5, 3], strict=True):
        per_fold = np.bincount(folds[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n
    np.testing.assert_array_equal(folds, stratified_folds(labels, 5, seed=0))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=1))


def test_holdout_fraction_per_class():
    labels = np.repeat(np.arange(3), [100, 50, 10])
    mask = validation_mask(labels, seed=0, fraction=0.1)
    assert [int(mask[labels == c].sum()) for c in range(3)] == [10, 5, 1]


def test_balanced_draw_takes_the_same_number_of_every_class_seeded():
    labels = np.repeat(np.arange(3), [100, 50, 10])
    mask = validation_mask(labels, seed=0, per_class=4)
    assert [int(mask[labels == c].sum()) for c in range(3)] == [4, 4, 4]
    np.testing.assert_array_equal(mask, validation_mask(labels, seed=0, per_class=4))
    assert not np.array_equal(mask, validation_mask(labels, seed=1, per_class=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fold": 5}, "fold must be in 0..4"),
        ({"fraction": 1.5}, "valid_fraction"),
        ({"n_folds": 1}, "at least 2"),
        ({"per_class": 0}, "at least 1"),
        ({"per_class": 10}, r"would leave no training images of class\(es\) \[0\]"),
        ({"per_class": 2, "fraction": 0.1}, "not both"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validation_mask(np.zeros(10), seed=0, **kwargs)
