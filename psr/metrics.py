"""Classification metrics from integer labels and class probabilities (numpy only).

Conventions follow scikit-learn's defaults so the numbers can be checked against it:
- precision of a class that is never predicted, and recall of a class that never occurs, are 0;
- macro-F1 averages over the classes that occur in the labels or the predictions;
- UAR (unweighted average recall, "mean per-class accuracy") averages recall over the classes that
  occur in the labels (scikit-learn's ``balanced_accuracy_score``);
- ECE uses 15 equal-width confidence bins over (0, 1] (Guo et al., "On Calibration of Modern
  Neural Networks", ICML 2017): ``sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)|`` where the
  confidence of a sample is its top-class probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Number of confidence bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15

#: Probabilities are clipped to this before taking logs (a confident mistake costs ~27.6 nats).
NLL_EPS = 1e-12


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [N, K], got shape {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match {probs.shape[0]} samples")
    if labels.size == 0:
        raise ValueError("no samples to evaluate")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels out of range 0..{probs.shape[1] - 1}")
    return labels.astype(np.int64), probs


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[K, K]``: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    for name, values in (("labels", labels), ("predictions", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} outside 0..{num_classes - 1}")
    flat = labels * num_classes + preds
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class PerClass:
    """Per-class scores, each an array of length K."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def per_class_scores(cm: np.ndarray) -> PerClass:
    """Precision, recall, F1 and support of every class from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return PerClass(precision, recall, f1, support.astype(np.int64))


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the labels or the predictions."""
    scores = per_class_scores(cm)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(scores.f1[present].mean())


def unweighted_average_recall(cm: np.ndarray) -> float:
    """Mean per-class accuracy (UAR) over the classes present in the labels."""
    scores = per_class_scores(cm)
    return float(scores.recall[scores.support > 0].mean())


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean ``-log p(true class)`` in nats."""
    labels, probs = _check(labels, probs)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, NLL_EPS, 1.0)).mean())


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width confidence bins: edges ``[n_bins + 1]``, per-bin count, mean confidence and
    accuracy (NaN in empty bins)."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> CalibrationBins:
    """Bin samples by top-class confidence into ``n_bins`` intervals ``(lo, hi]`` over (0, 1]."""
    labels, probs = _check(labels, probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, correct_sum / count, np.nan)
    return CalibrationBins(edges, count, mean_conf, accuracy)


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-width confidence bins (see the module docstring)."""
    bins = calibration_bins(labels, probs, n_bins)
    filled = bins.count > 0
    gap = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float((bins.count[filled] / bins.count.sum() * gap).sum())


def branch_accuracies(labels: np.ndarray, branch_probs: np.ndarray) -> np.ndarray:
    """Accuracy of each pyramid branch alone from branch probabilities ``[N, n_branches, K]``."""
    branch_probs = np.asarray(branch_probs)
    if branch_probs.ndim != 3 or branch_probs.shape[0] != len(labels):
        shape = branch_probs.shape
        raise ValueError(f"branch probabilities must be [N, n_branches, K], got {shape}")
    preds = branch_probs.argmax(axis=2)  # [N, n_branches]
    return (preds == np.asarray(labels)[:, None]).mean(axis=0)


def classification_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    branch_probs: np.ndarray | None = None,
    branch_names: Sequence[str] | None = None,
) -> dict[str, float | int]:
    """Every headline metric as one flat dict (the shape ``dvc metrics show`` reads well).

    Keys: ``accuracy``, ``macro_f1``, ``uar``, ``nll``, ``ece``, ``num_samples``,
    ``<metric>_<class>`` for precision/recall/f1/support, and ``branch_accuracy_<name>`` for each
    pyramid branch when ``branch_probs`` is given.
    """
    labels, probs = _check(labels, probs)
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} probability columns")
    cm = confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    scores = per_class_scores(cm)
    out: dict[str, float | int] = {
        "accuracy": float(np.trace(cm) / cm.sum()),
        "macro_f1": macro_f1(cm),
        "uar": unweighted_average_recall(cm),
        "nll": negative_log_likelihood(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "num_samples": len(labels),
    }
    for field in ("precision", "recall", "f1"):
        for name, value in zip(class_names, getattr(scores, field), strict=True):
            out[f"{field}_{name}"] = float(value)
    for name, value in zip(class_names, scores.support, strict=True):
        out[f"support_{name}"] = int(value)
    if branch_probs is not None:
        k = np.shape(branch_probs)[-1]
        if k != probs.shape[1]:
            raise ValueError(
                f"branch probabilities have {k} classes per branch but {probs.shape[1]} fused"
            )
        accs = branch_accuracies(labels, branch_probs)
        names = branch_names or [str(i) for i in range(len(accs))]
        if len(names) != len(accs):
            raise ValueError(f"{len(names)} branch names for {len(accs)} branches")
        for name, acc in zip(names, accs, strict=True):
            out[f"branch_accuracy_{name}"] = float(acc)
    return out


#: The metrics a report leads with (and ``psr evaluate`` prints).
HEADLINE = ("accuracy", "macro_f1", "uar", "nll", "ece")

#: Metrics of the majority-class baseline (the others are undefined or meaningless for it).
BASELINE_METRICS = ("accuracy", "macro_f1", "uar")


def majority_baseline(
    train_labels: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, float | str]:
    """What always answering the training split's most frequent class scores on ``labels``:
    the floor a model must clear to have learned anything (``class`` names that class)."""
    k = len(class_names)
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=k)
    majority = int(counts.argmax())
    probs = np.zeros((len(labels), k))
    probs[:, majority] = 1.0
    scores = classification_metrics(np.asarray(labels), probs, class_names)
    return {"class": class_names[majority], **{m: float(scores[m]) for m in BASELINE_METRICS}}


def chance_baseline(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float | int]:
    """What a uniform random guess among the K classes scores on ``labels``, in expectation:
    accuracy and UAR are exactly 1/K; macro-F1 is its large-sample value, the mean over classes
    of ``2 p_c (1/K) / (p_c + 1/K)`` (class ``c``'s precision tends to its frequency ``p_c``,
    its recall is 1/K; every class is predicted, so every class counts)."""
    k = len(class_names)
    frequency = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k) / len(labels)
    f1 = 2 * frequency / (k * frequency + 1)
    return {"classes": k, "accuracy": 1.0 / k, "macro_f1": float(f1.mean()), "uar": 1.0 / k}


#: Scores with a bootstrap confidence interval, and the default interval and resample count.
INTERVAL_METRICS = ("accuracy", "macro_f1", "uar")
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000


def bootstrap_intervals(
    labels: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals of accuracy, macro-F1 and UAR over the samples.

    Each of ``resamples`` draws picks N samples with replacement (seeded). ``preds`` is ``[N]``,
    or ``[R, N]`` for R TTA repeats: then each draw scores every repeat on the same drawn
    samples and takes the mean over repeats, the statistic the official TTA report heads with,
    so the interval is the test set's sampling variation of that mean (the TTA views are
    fixed). Vectorised: one ``bincount`` of ``resamples x N`` pairs per repeat.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.atleast_2d(np.asarray(preds, dtype=np.int64))
    n, k = len(labels), num_classes
    if preds.shape[1] != n or n == 0:
        raise ValueError(f"predictions of shape {preds.shape} for {n} labels")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))  # [B, N]
    offset = np.arange(resamples)[:, None] * (k * k)  # each draw its own confusion matrix
    totals = {m: np.zeros(resamples) for m in INTERVAL_METRICS}
    for repeat in preds:
        cells = labels * k + repeat  # [N]: (true, predicted) cell of each sample
        flat = (offset + cells[draws]).ravel()
        cm = np.bincount(flat, minlength=resamples * k * k).reshape(resamples, k, k)
        tp = np.einsum("bii->bi", cm).astype(np.float64)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
        present, occurs = (support + predicted) > 0, support > 0  # as macro_f1 and the UAR
        totals["accuracy"] += tp.sum(axis=1) / n
        totals["macro_f1"] += (f1 * present).sum(axis=1) / present.sum(axis=1)
        totals["uar"] += (recall * occurs).sum(axis=1) / occurs.sum(axis=1)
    tails = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    return {
        m: tuple(float(v) for v in np.percentile(total / len(preds), tails))
        for m, total in totals.items()
    }
