"""Seeded, stratified validation splits carved from a training set.

Datasets without an official validation split (RAF-DB, AffectNet, most image folders) take one
from train, never from test: the PSR recipe uses one fold of a seeded 5-fold split.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from psr.data.records import Record, Skipped


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index ``[N]`` in ``0..n_folds-1`` for every sample; each class is shuffled with
    ``seed`` and dealt round-robin, so every fold has (almost) the same class mix."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    start = 0  # continue the deal across classes so small classes do not all land in fold 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        folds[members] = (start + np.arange(len(members))) % n_folds
        start = (start + len(members)) % n_folds
    return folds


def validation_mask(
    labels: np.ndarray,
    seed: int,
    n_folds: int = 5,
    fold: int = 0,
    fraction: float | None = None,
    per_class: int | None = None,
) -> np.ndarray:
    """Boolean ``[N]``: which training samples become validation.

    Fold ``fold`` of a seeded stratified ``n_folds`` split; or, when ``fraction`` is given, a
    seeded stratified holdout of that share of every class; or, when ``per_class`` is given, a
    seeded class-balanced draw of that many samples of every class (the official AffectNet
    helper's ``balanced_sampler``, 1000 per class, seeded here).
    """
    labels = np.asarray(labels)
    if fraction is not None and per_class is not None:
        raise ValueError("give valid_fraction or valid_per_class, not both")
    if per_class is not None:
        return _balanced_mask(labels, seed, per_class)
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        mask = np.zeros(len(labels), dtype=bool)
        for cls in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == cls))
            mask[members[: round(len(members) * fraction)]] = True
        return mask
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    return stratified_folds(labels, n_folds, seed) == fold


def _balanced_mask(labels: np.ndarray, seed: int, per_class: int) -> np.ndarray:
    if per_class < 1:
        raise ValueError(f"valid_per_class must be at least 1, got {per_class}")
    classes, counts = np.unique(labels, return_counts=True)
    short = {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n <= per_class}
    if short:
        raise ValueError(
            f"valid_per_class={per_class} would leave no training images of class(es) "
            f"{sorted(short)} (training images per class: {short})"
        )
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in classes:
        mask[rng.permutation(np.flatnonzero(labels == cls))[:per_class]] = True
    return mask


def carve_validation(
    items: list[Record | Skipped],
    seed: int,
    n_folds: int = 5,
    fold: int = 0,
    fraction: float | None = None,
    per_class: int | None = None,
) -> int:
    """Move the :func:`validation_mask` share of the ``train`` records to ``valid``, in place;
    return how many training records there were (rejected rows are left alone)."""
    train = [k for k, r in enumerate(items) if isinstance(r, Record) and r.split == "train"]
    labels = np.array([items[k].label for k in train], dtype=np.int64)
    for k in np.array(train, dtype=np.int64)[
        validation_mask(labels, seed, n_folds, fold, fraction, per_class)
    ]:
        items[k] = dataclasses.replace(items[k], split="valid")
    return len(train)


def describe(
    seed: int, n_folds: int, fold: int, fraction: float | None, per_class: int | None = None
) -> str:
    """How validation was carved, for the manifest's protocol."""
    if per_class is not None:
        return f"class-balanced {per_class} per class from train, seed {seed}"
    if fraction is not None:
        return f"stratified {fraction:g} of train, seed {seed}"
    return f"fold {fold} of a stratified {n_folds}-fold split of train, seed {seed}"
