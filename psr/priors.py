"""Label-prior matrices for PDLS: ``P[y, c]`` = how much of class y's probability mass the crowd
puts on class c.

The paper's procedure: take the FER+ training images, group them by majority label, and average
each image's L1-normalised 8-way vote vector per group -> an 8x8 row-stochastic matrix over
EXPRESSIONS. Other datasets reuse it re-indexed to their class order (contempt dropped for 7
classes, rows not renormalised, as the official code does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from psr.data.ferplus import VOTE_NAMES, process_votes, read_votes
from psr.data.labels import EXPRESSIONS, permutation
from psr.data.prepared import load_split, read_manifest
from psr.fileio import atomic_write

_N_EMOTIONS = len(EXPRESSIONS)

#: The official constant prior ``fer_emo_dis`` (prlab_utils v1.0.0, prlab/emotion/emo_const.py),
#: rows and columns in EXPRESSIONS order. The authors computed it from FER+'s training votes;
#: :func:`prior_from_vote_file` recomputes it from fer2013new.csv (entries differ by up to 0.022).
OFFICIAL_PRIOR: tuple[tuple[float, ...], ...] = (
    (0.777334, 0.03261, 0.017447, 0.114091, 0.026224, 0.007145, 0.004379, 0.020772),
    (0.042842, 0.917618, 0.023221, 0.004816, 0.004217, 0.001969, 0.001755, 0.003563),
    (0.058354, 0.035775, 0.787254, 0.01037, 0.014319, 0.003015, 0.088513, 0.0024),
    (0.170124, 0.013292, 0.008632, 0.747902, 0.022808, 0.011237, 0.015923, 0.010082),
    (0.074781, 0.02535, 0.060215, 0.031924, 0.740551, 0.034938, 0.023251, 0.008989),
    (0.08959, 0.017445, 0.016911, 0.088629, 0.125152, 0.620813, 0.007788, 0.033671),
    (0.042815, 0.012239, 0.169483, 0.072557, 0.027228, 0.013045, 0.658964, 0.003671),
    (0.147933, 0.022174, 0.00989, 0.042923, 0.033551, 0.059924, 0.005507, 0.678099),
)


def official_prior(class_names: Sequence[str] = EXPRESSIONS) -> np.ndarray:
    """:data:`OFFICIAL_PRIOR` in ``class_names`` order (re-indexed by :func:`reindex`)."""
    return reindex(np.array(OFFICIAL_PRIOR), EXPRESSIONS, class_names)


def prior_from_votes(
    votes: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    missing: Literal["error", "uniform"] = "error",
) -> np.ndarray:
    """``votes [N, K]`` (raw counts) grouped by ``labels [N]`` -> ``[K, K]``: row y is the mean
    L1-normalised vote vector of the images labelled y.

    A class without images has no defined row: an error, or with ``missing="uniform"`` a
    uniform row (tiny datasets)."""
    votes = np.asarray(votes, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if votes.ndim != 2 or len(votes) != len(labels):
        raise ValueError(f"votes {list(votes.shape)} and labels {list(labels.shape)} do not match")
    k = votes.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    totals = votes.sum(axis=1, keepdims=True)
    if np.any(totals <= 0) or np.any(votes < 0):
        raise ValueError(f"{int((totals <= 0).sum())} images have no (or negative) votes")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels outside 0..{k - 1}")
    normalised = votes / totals  # [N, K], rows sum to 1
    counts = np.bincount(labels, minlength=k)
    empty = [names[c] for c in range(k) if counts[c] == 0]
    if empty and missing == "error":
        raise ValueError(
            f"no images labelled {empty}: their prior rows are undefined (missing='uniform'"
            " fills them with 1/K)"
        )
    sums = np.zeros((k, k))
    np.add.at(sums, labels, normalised)
    prior = sums / np.maximum(counts, 1)[:, None]
    prior[counts == 0] = 1.0 / k
    return prior


def paper_prior(
    votes: np.ndarray,
    missing: Literal["error", "uniform"] = "error",
    required: Sequence[str] = EXPRESSIONS,
) -> np.ndarray:
    """FER+ training votes ``[N, 10]`` (over VOTE_NAMES) -> the paper's 8x8 prior over
    EXPRESSIONS: images grouped by their majority label (Microsoft's rule, so images without a
    majority are left out), votes cut to the 8 emotions.

    ``missing`` applies to the ``required`` classes only: a 7-class FER+ split has no contempt
    images, and its contempt row is dropped by :func:`reindex` anyway."""
    votes = np.asarray(votes, dtype=np.float64)
    keep, targets = process_votes(votes, "majority")
    labels = targets[keep].argmax(axis=1)
    counts = np.bincount(labels, minlength=_N_EMOTIONS)
    empty = [n for n in required if counts[EXPRESSIONS.index(n)] == 0]
    if empty and missing == "error":
        raise ValueError(
            f"no images labelled {empty}: their prior rows are undefined (missing='uniform'"
            " fills them with 1/K)"
        )
    return prior_from_votes(votes[keep, :_N_EMOTIONS], labels, EXPRESSIONS, "uniform")


def prior_from_vote_file(path: str | Path) -> np.ndarray:
    """The paper's 8x8 prior (EXPRESSIONS order) from fer2013new.csv's Training face rows."""
    table = read_votes(path)
    rows = np.flatnonzero((table.usage == "Training") & (table.names != ""))
    if not rows.size:
        raise ValueError(f"{path} has no Training rows")
    return paper_prior(table.votes[rows])


def reindex(prior: np.ndarray, src_names: Sequence[str], dst_names: Sequence[str]) -> np.ndarray:
    """Reorder (and subset) rows and columns from ``src_names`` to ``dst_names`` order.

    Classes missing from ``dst_names`` (contempt for 7 classes) are dropped and the rows are
    not renormalised, as in the official code.
    """
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (len(src_names), len(src_names)):
        raise ValueError(f"prior {list(prior.shape)} does not match {len(src_names)} class names")
    order = permutation(src_names, dst_names)
    return prior[np.ix_(order, order)]


def uniform(k: int) -> np.ndarray:
    """The uniform prior (PDLS then equals plain label smoothing)."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    return np.full((k, k), 1.0 / k)


def prior_for_dataset(
    root: str | Path,
    votes_file: str | Path | None = None,
    missing: Literal["error", "uniform"] = "error",
) -> tuple[tuple[str, ...], np.ndarray, str]:
    """The prior for a prepared dataset, in its class order: ``(class_names, matrix, source)``.

    From ``votes_file`` (fer2013new.csv) when given; else from the train split's crowd votes
    (the paper's procedure when it carries all ten FER+ vote columns); else an error asking
    for the vote file. ``missing`` is passed to :func:`prior_from_votes`.
    """
    root = Path(root)
    names = tuple(read_manifest(root)["class_names"])
    if votes_file is not None:
        matrix = prior_from_vote_file(votes_file)
        return names, reindex(matrix, EXPRESSIONS, names), f"FER+ votes {votes_file}"
    index = pd.read_csv(root / "train.csv")
    ferplus_columns = [f"votes_{v}" for v in VOTE_NAMES]
    if all(c in index.columns for c in ferplus_columns):
        votes = index[ferplus_columns].to_numpy(dtype=np.float64)
        matrix = paper_prior(votes, missing, required=names)
        return names, reindex(matrix, EXPRESSIONS, names), f"FER+ votes of {root}/train.csv"
    train = load_split(root, "train")
    if train.votes is not None:
        matrix = prior_from_votes(train.votes, train.labels, names, missing)
        return names, matrix, f"crowd votes of {root}/train.csv grouped by label"
    raise ValueError(
        f"{root} has no crowd votes: pass the FER+ vote file (fer2013new.csv) to re-index its"
        " prior to this dataset"
    )


def save_priors(
    path: str | Path, class_names: Sequence[str], matrix: np.ndarray, source: str
) -> None:
    """Write ``priors.json`` (class names, matrix, where it came from) atomically."""
    matrix = _check(tuple(class_names), np.asarray(matrix, dtype=np.float64), str(path))
    text = json.dumps(
        {"class_names": list(class_names), "matrix": matrix.tolist(), "source": source}, indent=2
    )
    atomic_write(path, text.encode() + b"\n")


def load_priors(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(class_names, matrix [K, K])`` from a file written by :func:`save_priors`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file not found: {path}")
    try:
        data = json.loads(path.read_text())
        names, matrix = tuple(data["class_names"]), np.asarray(data["matrix"], dtype=np.float64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a prior file ({err!r})") from None
    return names, _check(names, matrix, str(path))


def prior_for_classes(path: str | Path, class_names: Sequence[str]) -> np.ndarray:
    """The prior in ``path`` in the order of ``class_names``: re-indexed by name (the one rule
    for a prior computed in another class order); a class it has no row for is an error."""
    names, matrix = load_priors(path)
    class_names = tuple(class_names)
    if names == class_names:
        return matrix
    missing = [n for n in class_names if n not in names]
    if missing:
        raise ValueError(f"{path}: prior has no rows for classes {missing} (it has {list(names)})")
    return reindex(matrix, names, class_names)


def plot_priors(
    path: str | Path, class_names: Sequence[str], matrix: np.ndarray, title: str = "Label prior"
) -> None:
    """Save an annotated heatmap of the prior (rows: true class, columns: crowd's mass)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("crowd's label")
    ax.set_ylabel("majority label")
    ax.set_title(title)
    for y in range(k):
        for c in range(k):
            value = matrix[y, c]
            colour = "white" if value > 0.5 else "black"
            ax.text(c, y, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def _check(names: tuple[str, ...], matrix: np.ndarray, where: str) -> np.ndarray:
    k = len(names)
    if matrix.shape != (k, k):
        raise ValueError(f"{where}: matrix {list(matrix.shape)} does not match {k} class names")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError(f"{where}: prior entries must be finite and non-negative")
    return matrix
