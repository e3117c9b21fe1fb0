"""The evaluation report's figures, one PNG each (``psr.report.write_report`` lays them out):
confusion matrices, reliability diagram, per-class scores, pyramid branches, the most confident
mistakes and the accuracy breakdown by a sidecar column."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from psr.evaluate import EvalResult
from psr.metrics import calibration_bins, confusion_matrix, per_class_scores

MISTAKES_SHOWN = 24
DPI = 100


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(result: EvalResult, path: Path, *, normalize: bool) -> None:
    """Confusion matrix, rows = true class; ``normalize`` divides each row by its count."""
    k = len(result.class_names)
    cm = confusion_matrix(result.labels, result.preds, k).astype(np.float64)
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.6 + 0.75 * k))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, cm.max()))
    for i in range(k):
        for j in range(k):
            text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            dark = cm[i, j] > (0.5 if normalize else cm.max() / 2)
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(k), result.class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), result.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else " (counts)"))
    _save(fig, path)


def plot_reliability(result: EvalResult, path: Path) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and a histogram."""
    bins = calibration_bins(result.labels, result.probs)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = bins.count > 0
    top.bar(centers[filled], bins.accuracy[filled], width=width, edgecolor="k", label="accuracy")
    top.bar(
        centers[filled],
        bins.confidence[filled] - bins.accuracy[filled],
        bottom=bins.accuracy[filled],
        width=width,
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability (ECE {result.metrics['ece']:.3f}, {len(bins.count)} bins)")
    top.legend(loc="upper left")
    bottom.bar(centers, bins.count, width=width, edgecolor="k", color="tab:gray")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("samples")
    _save(fig, path)


def plot_per_class(result: EvalResult, path: Path) -> None:
    """Grouped bars of precision, recall and F1 per class."""
    cm = confusion_matrix(result.labels, result.preds, len(result.class_names))
    scores = per_class_scores(cm)
    x = np.arange(len(result.class_names))
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(x), 4))
    for offset, name in zip((-0.27, 0, 0.27), ("precision", "recall", "f1"), strict=True):
        ax.bar(x + offset, getattr(scores, name), width=0.27, label=name)
    ax.set_xticks(
        x, [f"{n}\n(n={s})" for n, s in zip(result.class_names, scores.support, strict=True)]
    )
    ax.set_ylim(0, 1)
    ax.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.12))
    _save(fig, path)


def branches_figure(results: Mapping[str, EvalResult]) -> plt.Figure:
    """Accuracy of each pyramid branch alone next to the fused prediction, per result; the
    legend sits right of the axes, where no bar or value label can be under it."""
    first = next(iter(results.values()))
    labels = [*first.branch_names, "fused"]
    x = np.arange(len(labels))
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(labels), 3.5))
    for i, (name, result) in enumerate(results.items()):
        accs = [result.metrics[f"branch_accuracy_{b}"] for b in result.branch_names]
        values = [*accs, result.fused_accuracy]
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.1)
    ax.set_title("pyramid branches alone vs fused")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_branches(results: Mapping[str, EvalResult], path: Path) -> None:
    """:func:`branches_figure` as a PNG."""
    _save(branches_figure(results), path)


def plot_mistakes(result: EvalResult, images: np.ndarray, path: Path) -> int:
    """A grid of the most confident mistakes (true / predicted / probability); returns how many."""
    wrong = np.flatnonzero(result.preds != result.labels)
    order = wrong[np.argsort(-result.probs[wrong].max(axis=1), kind="stable")][:MISTAKES_SHOWN]
    cols = 6
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 2.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order, strict=False):
        image = np.asarray(images[i])
        gray = image.ndim == 2 or image.shape[-1] == 1
        shown = image.squeeze(-1) if image.ndim == 3 and gray else image
        ax.imshow(shown, cmap="gray", vmin=0, vmax=255)  # no contrast stretch: show the pixels
        true, pred = result.class_names[result.labels[i]], result.class_names[result.preds[i]]
        ax.set_title(f"{true} → {pred}\np={result.probs[i].max():.2f}", fontsize=8)
    if not len(order):
        axes[0, 0].text(0, 0.5, "no mistakes", fontsize=12)
    fig.suptitle("most confident mistakes (true → predicted)")
    _save(fig, path)
    return len(order)


def plot_breakdown(table: pd.DataFrame, column: str, path: Path) -> None:
    """Accuracy per group of a sidecar column (bars per result), with the group sizes."""
    accuracy = [c for c in table.columns if c.startswith("accuracy_")]
    x = np.arange(len(table))
    width = 0.8 / len(accuracy)
    fig, ax = plt.subplots(figsize=(2 + 1.0 * len(x), 3.8))
    for i, col in enumerate(accuracy):
        offset = (i - (len(accuracy) - 1) / 2) * width
        ax.bar(x + offset, table[col], width=width, label=col.removeprefix("accuracy_"))
    ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(table["group"], table["count"], strict=True)])
    ax.set_xlabel(column)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"accuracy by {column}")
    ax.legend()
    _save(fig, path)


def plot_groups_by_arm(
    table: pd.DataFrame,
    column: str,
    path: Path,
    *,
    measure: str = "",
    against: str | None = None,
) -> None:
    """Accuracy per group of ``column`` for several models (``table``: arm, group, count, mean,
    std in group order, or ``<measure>_mean``/``_std``), one line with seed-to-seed error bars
    per arm; ``against`` names what it was scored against in the title."""
    mean, std = (f"{measure}_mean", f"{measure}_std") if measure else ("mean", "std")
    groups = list(dict.fromkeys(table["group"]))
    counts = table.drop_duplicates("group").set_index("group")["count"]
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(3 + 1.1 * len(groups), 4.2))
    for arm, rows in table.groupby("arm", sort=False):
        rows = rows.set_index("group").reindex(groups)
        ax.errorbar(x, rows[mean], yerr=rows[std], marker="o", capsize=3, label=arm)
    ax.set_xticks(x, [f"{g}\n(n={int(counts[g])})" for g in groups])
    ax.set_xlabel(column)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title(f"accuracy by {column}" + (f" against {against}" if against else ""))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
