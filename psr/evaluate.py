"""Run a model over a prepared split, optionally with the paper's test-time augmentation (TTA).

The model returns branch logits ``[B, n_branches, K]``; we keep each branch's softmax (to show what
the pyramid adds over any single scale) and the fused prediction ``psr.models.fuse`` (mean of the
branch softmaxes). TTA follows fastai v1 ``Learner.TTA(beta=0.4, scale=1.1)`` as used by the
official code: ``0.4 * p(plain) + 0.6 * mean p(8 corner-zoom/flip views)``, the random views
drawn ``TTA_REPEATS`` times (so 24 augmented views per image).

The official report (prlab's ``make_report_cls``) scores each TTA repeat on its own and prints
the mean, std, max and median of the repeats' accuracies: with TTA, ``accuracy``, ``macro_f1``
and ``uar`` here are those means (the headline), and the blend of every view is reported beside
them as ``pooled_*`` (it drives the probabilities, confusion matrices and calibration).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from psr.data.prepared import ID_COLUMN
from psr.data.torch_dataset import FERDataset, SeededSampler
from psr.data.transforms import (
    TTA_BETA,
    TTA_REPEATS,
    AugmentConfig,
    ImageTransform,
    blend_tta,
    eval_transform,
    tta_transforms,
)
from psr.device import resolve_device
from psr.metrics import (
    BOOTSTRAP_RESAMPLES,
    CI_LEVEL,
    bootstrap_intervals,
    classification_metrics,
)
from psr.models import fuse

if TYPE_CHECKING:
    from psr.data.prepared import PreparedSplit


@dataclass(frozen=True)
class EvalResult:
    """Everything the report needs: flat metrics, fused ``probs [N, K]``, per-branch
    ``branch_probs [N, n_branches, K]``, the true ``labels [N]``, and names."""

    metrics: dict[str, float | int]
    probs: np.ndarray
    branch_probs: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    branch_names: tuple[str, ...]
    tta: bool
    repeat_preds: np.ndarray | None = None  # [R, N]: each TTA repeat's own prediction

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def fused_accuracy(self) -> float:
        """Accuracy of ``probs`` (with TTA the pooled blend, which the branch scores match)."""
        return float(self.metrics.get("pooled_accuracy", self.metrics["accuracy"]))


def branch_names_of(model: nn.Module, n_branches: int) -> tuple[str, ...]:
    """Names of the model's pyramid branches (``low``, ``sr_x2``, ``full``), else ``b0, b1...``."""
    branches = getattr(model, "branches", None)
    if branches is not None and len(branches) == n_branches:
        return tuple(str(getattr(b, "name", b)) for b in branches)
    return tuple(f"b{i}" for i in range(n_branches))


@torch.inference_mode()
def predict_batch(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[B, 3, S, S]`` -> (fused probs ``[B, K]``, branch probs ``[B, n, K]``)."""
    logits = model(images)
    if logits.ndim == 2:  # a single-branch baseline: [B, K] -> [B, 1, K]
        logits = logits[:, None, :]
    return fuse(logits).float(), logits.float().softmax(dim=-1)


def _predict_view(
    model: nn.Module,
    split: PreparedSplit,
    transform: ImageTransform,
    *,
    batch_size: int,
    device: torch.device,
    workers: int,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view of the whole split. With ``seed``, every sample's random augmentation is drawn
    from its own seed, so TTA results do not depend on the number of workers."""
    dataset = FERDataset(split, transform)
    sampler = SequentialSampler(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler if seed is None else SeededSampler(sampler, seed),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    fused, branches = [], []
    for images, _ in loader:
        f, b = predict_batch(model, images.to(device, non_blocking=True))
        fused.append(f.cpu())
        branches.append(b.cpu())
    return torch.cat(fused), torch.cat(branches)  # [N, K], [N, n, K]


#: The evaluation variants: the paper's test-time augmentation and the plain single pass.
VARIANTS = ("tta", "no_tta")


def evaluate(model: nn.Module, split: PreparedSplit, *, tta: bool = False, **options) -> EvalResult:
    """One variant of :func:`evaluate_variants`: with ``tta`` the paper's, else the plain pass."""
    variant = "tta" if tta else "no_tta"
    return evaluate_variants(model, split, (variant,), **options)[variant]


def evaluate_variants(
    model: nn.Module,
    split: PreparedSplit,
    variants: Sequence[str] = ("tta",),
    *,
    image_size: int,
    batch_size: int = 64,
    tta_repeats: int = TTA_REPEATS,
    tta_beta: float = TTA_BETA,
    device: str | torch.device = "cpu",
    workers: int = 0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    augment: AugmentConfig | None = None,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, EvalResult]:
    """Predict every image of ``split`` and compute the metrics of each of ``variants``
    (:data:`VARIANTS`, in the given order). The plain pass is TTA's first view, so adding
    ``no_tta`` to ``tta`` costs no inference.

    With ``tta`` the headline ``accuracy``, ``macro_f1`` and ``uar`` are the official statistic,
    the mean over the ``tta_repeats`` repeats of each repeat's own score, with
    ``accuracy_std/max/median`` and ``accuracy_repeat_<r>``; every other metric, ``probs`` and
    the ``pooled_*`` scores come from the blend of all ``tta_repeats`` x 8 views. ``augment`` is
    the training augmentation the views reuse (the dataset's recipe: rotation 30 for FER+, 15
    for RAF-DB); default: the FER+ recipe.

    ``bootstrap`` > 0 adds the 95 % percentile-bootstrap interval of each headline score over
    the images (``<score>_ci_low``/``_ci_high``, seeded by ``seed``; with TTA, of the mean over
    repeats: :func:`psr.metrics.bootstrap_intervals`) and ``bootstrap_resamples``.

    ``class_names`` (the model's output order) defaults to the split's; they must agree, because a
    model trained on one label order scores garbage on another.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be some of {list(VARIANTS)}, got {list(variants)}")
    names = tuple(class_names or split.class_names)
    if tuple(split.class_names) != names:
        raise ValueError(
            f"the model's classes {list(names)} differ from the split's {list(split.class_names)}"
        )
    if len(split.labels) == 0:
        raise ValueError("the split is empty: nothing to evaluate")
    if tta_repeats < 1:
        raise ValueError(f"tta_repeats must be >= 1, got {tta_repeats}")
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.to(device).eval()
    run = {"batch_size": batch_size, "device": device, "workers": workers}
    plain, plain_branches = _predict_view(model, split, eval_transform(image_size), **run)
    labels = np.asarray(split.labels, dtype=np.int64)
    outputs = {"no_tta": (plain, plain_branches, None)}
    if "tta" in variants:
        fused_views, branch_views, repeats = [], [], []
        for repeat in range(tta_repeats):
            repeat_views = []
            for index, view in enumerate(tta_transforms(image_size, augment)):
                view_seed = seed + 1000 * repeat + index
                f, b = _predict_view(model, split, view, seed=view_seed, **run)
                repeat_views.append(f)
                branch_views.append(b)
            fused_views += repeat_views
            repeats.append(blend_tta(plain, repeat_views, tta_beta).numpy().astype(np.float64))
        # Blending is linear, so pooling every view equals the mean of the repeats' blends.
        fused = blend_tta(plain, fused_views, tta_beta)
        branches = blend_tta(plain_branches, branch_views, tta_beta)
        outputs["tta"] = (fused, branches, repeats)
    branch_names = branch_names_of(model, plain_branches.shape[1])
    ids = tuple(str(i) for i in split.ids)
    results = {}
    for variant in variants:
        fused, branches, repeats = outputs[variant]
        probs = fused.numpy().astype(np.float64)
        branch_probs = branches.numpy().astype(np.float64)
        if probs.shape[1] != len(names):
            raise ValueError(
                f"the model outputs {probs.shape[1]} classes, the split has {len(names)}"
            )
        metrics = classification_metrics(labels, probs, names, branch_probs, branch_names)
        repeat_preds = None
        if repeats is not None:
            scores = [classification_metrics(labels, p, names) for p in repeats]
            metrics |= official_tta_statistics(metrics, scores)
            repeat_preds = np.stack([p.argmax(axis=1) for p in repeats])
        if bootstrap > 0:
            preds = repeat_preds if repeat_preds is not None else probs.argmax(axis=1)
            metrics |= interval_metrics(labels, preds, len(names), bootstrap, seed)
        results[variant] = EvalResult(
            metrics=metrics,
            probs=probs,
            branch_probs=branch_probs,
            labels=labels,
            ids=ids,
            class_names=names,
            branch_names=branch_names,
            tta=variant == "tta",
            repeat_preds=repeat_preds,
        )
    return results


def interval_metrics(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, resamples: int, seed: int
) -> dict[str, float | int]:
    """:func:`psr.metrics.bootstrap_intervals` as flat metrics: ``<score>_ci_low``,
    ``<score>_ci_high``, ``ci_level`` and ``bootstrap_resamples``."""
    intervals = bootstrap_intervals(labels, preds, num_classes, resamples=resamples, seed=seed)
    out: dict[str, float | int] = {"ci_level": CI_LEVEL, "bootstrap_resamples": int(resamples)}
    for score, (low, high) in intervals.items():
        out |= {f"{score}_ci_low": low, f"{score}_ci_high": high}
    return out


#: Scores the official report takes per TTA repeat (its "uas" is the UAR).
REPEAT_SCORES: tuple[str, ...] = ("accuracy", "macro_f1", "uar")


def official_tta_statistics(
    pooled: Mapping[str, float | int], repeats: Sequence[Mapping[str, float | int]]
) -> dict[str, float]:
    """The official TTA report: per-repeat accuracy, its mean (the headline), std, max and median,
    the mean macro-F1 and UAR of the repeats; the pooled blend's scores as ``pooled_*``."""
    accuracies = np.array([r["accuracy"] for r in repeats], dtype=np.float64)
    out = {f"pooled_{key}": float(pooled[key]) for key in REPEAT_SCORES}
    out |= {key: float(np.mean([r[key] for r in repeats])) for key in REPEAT_SCORES}
    out |= {
        "accuracy_std": float(np.std(accuracies)),
        "accuracy_max": float(np.max(accuracies)),
        "accuracy_median": float(np.median(accuracies)),
    }
    out |= {f"accuracy_repeat_{r}": float(a) for r, a in enumerate(accuracies, start=1)}
    return out


def load_sidecar(path: str | Path, key: str | None = None) -> pd.DataFrame:
    """A per-sample table such as the synthetic generator's ``generation.csv``; its ``key``
    column (default ``id``: the prepared ids) is read as text, so ids keep leading zeros."""
    path, key = Path(path), key or ID_COLUMN
    if not path.is_file():
        raise FileNotFoundError(f"sidecar file not found: {path}")
    try:
        table = pd.read_csv(path, dtype={key: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV table ({err})") from err
    if table.empty:
        raise ValueError(f"{path}: the sidecar table has no rows")
    return table


def match_sidecar(ids: Sequence[str], table: pd.DataFrame, key: str | None = None) -> pd.DataFrame:
    """The sidecar rows of ``ids``, in order, joined on the sidecar's ``key`` column (default
    ``id``), which must hold exactly the prepared ids, as the generator's ``generation.csv``."""
    key = key or ID_COLUMN
    if key not in table.columns:
        raise ValueError(f"sidecar has no key column {key!r}; columns: {list(table.columns)}")
    keys = table[key].astype(str)
    repeated = keys[keys.duplicated()]
    if len(repeated):
        raise ValueError(f"sidecar column {key!r} repeats ids, e.g. {repeated.iloc[0]!r}")
    rows = pd.Series(np.arange(len(table)), index=keys.to_numpy())
    missing = [i for i in map(str, ids) if i not in rows.index]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(ids)} evaluated samples are not in the sidecar's {key!r}"
            f" column (e.g. {missing[0]!r}; the sidecar has e.g. {keys.iloc[0]!r})"
        )
    return table.iloc[rows.loc[[str(i) for i in ids]].to_numpy()]


def _class_indices(rows: pd.DataFrame, column: str, class_names: Sequence[str]) -> np.ndarray:
    """The class index of each row's name in sidecar ``column``, NaN where the name is not a
    class (the generator's ``not_a_face``); an error when no row names a class."""
    if column not in rows.columns:
        raise ValueError(f"sidecar has no column {column!r}; columns: {list(rows.columns)}")
    index = {name: float(i) for i, name in enumerate(class_names)}
    labels = rows[column].astype(str).map(index).to_numpy(dtype=np.float64)
    if np.isnan(labels).all():
        raise ValueError(
            f"sidecar column {column!r} names none of the classes {list(class_names)} "
            f"(e.g. {rows[column].iloc[0]!r})"
        )
    return labels


def _groups(values: pd.Series, bins: int) -> pd.Series:
    """Numeric columns with more than ``bins`` distinct values -> ``bins`` equal-count intervals
    (labelled ``lo-hi``); anything else is grouped by value."""
    numeric = pd.api.types.is_numeric_dtype(values)
    if not numeric or values.nunique() <= bins:
        return values.astype(str) if not numeric else values
    edges = np.unique(np.quantile(values.to_numpy(dtype=np.float64), np.linspace(0, 1, bins + 1)))
    labels = [f"{lo:.4g}-{hi:.4g}" for lo, hi in itertools.pairwise(edges)]
    return pd.cut(values, edges, labels=labels, include_lowest=True)


def accuracy_breakdown(
    results: Mapping[str, EvalResult],
    sidecar: pd.DataFrame,
    column: str,
    *,
    key: str | None = None,
    bins: int = 5,
    truth: str | None = None,
) -> pd.DataFrame:
    """Accuracy per value (or per binned range) of a sidecar ``column``, one ``accuracy_<name>``
    column per result (e.g. with and without TTA) plus the sample ``count`` of each group.
    With ``truth`` (a sidecar column of class names, e.g. the generator's ``true_label``), also
    ``accuracy_<name>_vs_<truth>``: the same predictions scored against that column, over the
    rows whose ``truth`` is one of the classes.

    The sidecar is joined to the samples on its ``key`` column (default ``id``, the prepared
    ids) with :func:`match_sidecar`. Every evaluated sample must be in the sidecar.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    first = next(iter(results.values()))
    if column not in sidecar.columns:
        raise ValueError(f"sidecar has no column {column!r}; columns: {list(sidecar.columns)}")
    rows = match_sidecar(first.ids, sidecar, key).reset_index(drop=True)
    values = rows[column]
    if values.isna().any():
        raise ValueError(
            f"sidecar column {column!r} is empty for {int(values.isna().sum())} samples"
        )
    frame = pd.DataFrame({"group": _groups(values, bins)})
    for name, result in results.items():
        frame[f"accuracy_{name}"] = (result.preds == result.labels).astype(np.float64)
    if truth is not None:
        truth_labels = _class_indices(rows, truth, first.class_names)
        for name, result in results.items():
            correct = (result.preds == truth_labels).astype(np.float64)
            frame[f"accuracy_{name}_vs_{truth}"] = np.where(np.isnan(truth_labels), np.nan, correct)
    grouped = frame.groupby("group", observed=True, sort=True)
    out = grouped.mean()
    out.insert(0, "count", grouped.size())
    out = out.reset_index().assign(group=lambda t: t["group"].astype(str))
    out.attrs["matched_by"] = f"sidecar column {key or ID_COLUMN!r}"
    return out
