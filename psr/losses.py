"""Classification losses over branch logits, all as cross-entropy against a target distribution.

Every loss is called ``loss(logits, target)`` with ``logits`` ``[B, K]`` or ``[B, n_branches, K]``
(then the loss is the mean over branches of each branch's loss, as in the paper) and ``target``
either integer labels ``[B]`` or a distribution ``[B, K]`` (e.g. FER+ vote proportions).

- :class:`PDLSLoss`: Prior Distribution Label Smoothing, q = alpha*1[c=y] + (1-alpha)*P[y, c].
- :func:`uniform_label_smoothing`: PDLS with P[y, c] = 1/K (PyTorch's ``label_smoothing=1-alpha``).
- :class:`SoftTargetCrossEntropy` and :class:`CrossEntropy`: q = the target itself.
- :class:`FocalPDLSLoss`: PDLS with every term multiplied by (1 - p_c)^gamma.

Optional ``class_weights`` ``[K]`` weight each sample by its true class (for a distribution
target: sum_c w_c t_c); the batch loss is the weighted mean, as ``F.cross_entropy(weight=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES: tuple[str, ...] = ("pdls", "uniform_ls", "soft_ce", "ce", "focal_pdls")

ArrayLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]] | Sequence[float]


def _as_tensor(value: ArrayLike, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not a numeric array: {err}") from err


def check_prior(prior: ArrayLike, num_classes: int) -> torch.Tensor:
    """A ``[K, K]`` float tensor of non-negative rows summing to at most 1 (and above 0).

    Rows may sum to slightly less than 1: the official 7-class prior drops contempt from the
    FER+ matrix without renormalising.
    """
    p = _as_tensor(prior, "prior")
    if p.shape != (num_classes, num_classes):
        raise ValueError(f"prior must be [{num_classes}, {num_classes}], got {list(p.shape)}")
    sums = p.sum(dim=1)
    if (p < 0).any() or (sums > 1 + 1e-4).any() or (sums <= 0).any():
        raise ValueError(
            f"prior is not row-stochastic: entries must be >= 0 and each row sum in (0, 1], "
            f"got row sums {[round(float(s), 4) for s in sums]}"
        )
    return p


class TargetDistributionLoss(nn.Module):
    """-sum_c q_c * f(p)_c * log p_c averaged over samples and branches; q from the target."""

    def __init__(
        self,
        num_classes: int,
        class_weights: ArrayLike | None = None,
        gamma: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.num_classes = num_classes
        self.gamma = gamma
        weights = None
        if class_weights is not None:
            weights = _as_tensor(class_weights, "class_weights")
            if weights.shape != (num_classes,) or (weights < 0).any():
                raise ValueError(
                    f"class_weights must be {num_classes} non-negative numbers, got {weights}"
                )
        self.register_buffer("class_weights", weights)

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        """``target`` ([B] labels or [B, K] distribution) -> training distribution q [B, K]."""
        return self.as_distribution(target)

    def as_distribution(self, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 1 and not target.is_floating_point():
            return F.one_hot(target.long(), self.num_classes).float()  # [B, K]
        if target.dim() == 2 and target.shape[1] == self.num_classes:
            return target.float()
        raise ValueError(
            f"target must be int labels [B] or a distribution [B, {self.num_classes}], "
            f"got {target.dtype} {list(target.shape)}"
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # full precision even inside the caller's autocast: it would run the prior and weight
        # matmuls in bf16/fp16 (3 significant digits)
        with torch.autocast(logits.device.type, enabled=False):
            return self._loss(logits.float(), target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() not in (2, 3) or logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"logits must be [B, {self.num_classes}] or [B, n_branches, {self.num_classes}], "
                f"got {list(logits.shape)}"
            )
        if target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"batch sizes differ: logits {logits.shape[0]}, target {target.shape[0]}"
            )
        q = self.target_distribution(target)  # [B, K]
        branch_logits = logits if logits.dim() == 3 else logits.unsqueeze(1)  # [B, n, K]
        log_p = F.log_softmax(branch_logits, dim=-1)  # [B, n, K]
        terms = q.unsqueeze(1) * log_p
        if self.gamma:
            terms = terms * (1 - log_p.exp()).pow(self.gamma)
        per_sample = -terms.sum(dim=-1)  # [B, n]
        if self.class_weights is None:
            return per_sample.mean()
        w = self.as_distribution(target) @ self.class_weights  # [B]
        per_branch = (w.unsqueeze(1) * per_sample).sum(dim=0) / w.sum()  # [n]
        return per_branch.mean()


class PDLSLoss(TargetDistributionLoss):
    """Prior Distribution Label Smoothing: q_c = alpha*1[c=y] + (1-alpha)*prior[y, c].

    For a distribution target t the same rule reads q = alpha*t + (1-alpha)*t @ prior.
    """

    def __init__(
        self,
        prior: ArrayLike,
        alpha: float = 0.8,
        class_weights: ArrayLike | None = None,
        gamma: float = 0.0,
    ) -> None:
        p = _as_tensor(prior, "prior")
        if p.dim() != 2 or p.shape[0] != p.shape[1]:
            raise ValueError(f"prior must be a square [K, K] matrix, got {list(p.shape)}")
        num_classes = p.shape[0]
        super().__init__(num_classes, class_weights, gamma)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.register_buffer("prior", check_prior(p, num_classes))

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        t = self.as_distribution(target)  # [B, K]
        return self.alpha * t + (1 - self.alpha) * (t @ self.prior)


class FocalPDLSLoss(PDLSLoss):
    """PDLS with each term scaled by (1 - p_c)^gamma (the ICASSP 2022 focal variant)."""

    def __init__(
        self,
        prior: ArrayLike,
        alpha: float = 0.8,
        gamma: float = 2.0,
        class_weights: ArrayLike | None = None,
    ) -> None:
        super().__init__(prior, alpha, class_weights, gamma)


class SoftTargetCrossEntropy(TargetDistributionLoss):
    """Cross-entropy against a per-image distribution (e.g. FER+ votes); labels = one-hot."""


class CrossEntropy(TargetDistributionLoss):
    """Plain cross-entropy on integer labels."""

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        if target.dim() != 1 or target.is_floating_point():
            raise ValueError(f"ce expects int labels [B], got {target.dtype} {list(target.shape)}")
        return self.as_distribution(target)


def uniform_prior(num_classes: int) -> torch.Tensor:
    return torch.full((num_classes, num_classes), 1.0 / num_classes)


def uniform_label_smoothing(
    num_classes: int, alpha: float = 0.9, class_weights: ArrayLike | None = None
) -> PDLSLoss:
    """Uniform label smoothing = PDLS with the uniform prior (smoothing 1 - alpha); alpha 0.9 is
    the official ``LabelSmoothingLoss`` default."""
    return PDLSLoss(uniform_prior(num_classes), alpha, class_weights)


def build_loss(
    name: str,
    num_classes: int,
    prior: ArrayLike | None = None,
    alpha: float = 0.8,
    gamma: float = 2.0,
    class_weights: ArrayLike | None = None,
) -> TargetDistributionLoss:
    """The loss ``name`` (one of ``LOSS_NAMES``); pdls and focal_pdls need a ``[K, K]`` prior."""
    if name in ("pdls", "focal_pdls"):
        if prior is None:
            raise ValueError(f"loss {name!r} needs a prior matrix [{num_classes}, {num_classes}]")
        p = check_prior(prior, num_classes)
        if name == "pdls":
            return PDLSLoss(p, alpha, class_weights)
        return FocalPDLSLoss(p, alpha, gamma, class_weights)
    if name == "uniform_ls":
        return uniform_label_smoothing(num_classes, alpha, class_weights)
    if name == "soft_ce":
        return SoftTargetCrossEntropy(num_classes, class_weights)
    if name == "ce":
        return CrossEntropy(num_classes, class_weights)
    raise ValueError(f"unknown loss {name!r}; valid: {list(LOSS_NAMES)}")
