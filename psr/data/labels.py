"""One canonical vocabulary of expression names and each dataset's own label order.

Every dataset numbers its classes differently (see docs/datasets.md). Code never moves an integer
label between datasets directly: it goes through names with :func:`remap`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Canonical names, in FER+ order (the order of the paper's prior matrix).
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)

#: Each dataset's label order, index = the integer stored in its files (RAF-DB: file value - 1).
DATASET_ORDERS: dict[str, tuple[str, ...]] = {
    "fer2013": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    "ferplus": EXPRESSIONS,
    "rafdb": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    "affectnet": (
        "neutral",
        "happiness",
        "sadness",
        "surprise",
        "fear",
        "disgust",
        "anger",
        "contempt",
    ),
}


def class_names(dataset: str, num_classes: int | None = None) -> tuple[str, ...]:
    """Class names of ``dataset`` in its own order; ``num_classes=7`` drops contempt."""
    if dataset not in DATASET_ORDERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASET_ORDERS)}")
    names = DATASET_ORDERS[dataset]
    if num_classes is None or num_classes == len(names):
        return names
    if num_classes == 7 and "contempt" in names:
        return tuple(n for n in names if n != "contempt")
    raise ValueError(f"{dataset} has no {num_classes}-class protocol (it has {len(names)} classes)")


def remap(labels: np.ndarray, src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """Translate integer labels from order ``src`` to order ``dst`` by name.

    Labels whose class is absent from ``dst`` become -1 (e.g. contempt in a 7-class protocol).
    """
    unknown = set(src) - set(EXPRESSIONS) | set(dst) - set(EXPRESSIONS)
    if unknown:
        raise ValueError(f"not canonical expression names: {sorted(unknown)}")
    table = np.array([dst.index(n) if n in dst else -1 for n in src], dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(src)):
        raise ValueError(f"labels out of range 0..{len(src) - 1}")
    return table[labels]


def permutation(src: Sequence[str], dst: Sequence[str]) -> list[int]:
    """Indices into ``src`` that produce ``dst`` order (every ``dst`` name must be in ``src``).

    Use it to reorder the rows of an output layer or a prior matrix: ``w[permutation(src, dst)]``.
    """
    missing = [n for n in dst if n not in src]
    if missing:
        raise ValueError(f"classes {missing} are not in the source order {list(src)}")
    return [list(src).index(n) for n in dst]
