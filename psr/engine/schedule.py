"""Optimisers with discriminative learning rates and fastai v1's one-cycle policy on torch.

fastai v1 ``fit_one_cycle(epochs, max_lr)`` (``OneCycleScheduler``) maps onto
``torch.optim.lr_scheduler.OneCycleLR`` as follows:

- ``max_lr``: one peak lr per parameter group (discriminative lrs);
- ``div_factor`` 25: start lr = max_lr / 25 (same meaning in both);
- fastai ``final_div`` 25e4 (its default ``div_factor * 1e4``) is measured from the *peak*, torch's
  ``final_div_factor`` from the *start* lr: ``final_div_factor = final_div / div_factor`` (= 1e4),
  so the final lr is max_lr / 25e4 in both;
- ``pct_start`` 0.3, ``anneal_strategy="cos"``, ``three_phase=False``: two cosine segments,
  start -> peak over 30% of the steps, peak -> final over the rest;
- momentum ``moms=(0.95, 0.85)``: ``max_momentum=0.95``, ``base_momentum=0.85``,
  ``cycle_momentum=True``; torch cycles SGD's ``momentum`` or Adam's ``beta1``, 0.95 -> 0.85 at the
  peak -> 0.95 at the end, as fastai does for both (it overrides SGD's own momentum too).

The one difference is an off-by-one at the segment borders: torch reaches the peak at step
``pct_start * N - 1`` and the final lr exactly at step ``N - 1``; fastai peaks at step
``int(pct_start * N)`` and stops one step before its final value. Weight decay is decoupled
(fastai ``true_wd=True``, ``wd=1e-2``) for both optimisers: AdamW, and :class:`SGDW` below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from psr.engine.config import PhaseConfig

#: beta1 / momentum when a phase does not cycle it.
CONSTANT_BETA1 = 0.9


class SGDW(torch.optim.SGD):
    """Momentum SGD with decoupled weight decay: ``w <- w * (1 - lr * wd)`` before each step, as
    fastai v1 applies ``true_wd`` and as AdamW does for Adam (torch's SGD only has L2 decay)."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float, weight_decay: float):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", weight_decay)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            shrink = 1.0 - group["lr"] * group["decoupled_weight_decay"]
            for param in group["params"]:
                if param.grad is not None:
                    param.mul_(shrink)
        return super().step(closure)


def group_parameters(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's ``param_groups()`` as lists of trainable parameters (groups may be empty,
    e.g. [STN + SR] with the STN off and interpolation instead of SR)."""
    if not hasattr(model, "param_groups"):
        raise ValueError(f"{type(model).__name__} has no param_groups(); the engine needs one")
    groups = []
    for group in model.param_groups():
        params = group["params"] if isinstance(group, dict) else group
        groups.append([p for p in params if p.requires_grad])
    if not any(groups):
        raise ValueError("the model has no trainable parameters")
    return groups


def expand_lrs(lrs: Sequence[float], n_groups: int) -> list[float]:
    """One lr per group: a single value is shared, otherwise the counts must match."""
    if len(lrs) == 1:
        return [float(lrs[0])] * n_groups
    if len(lrs) != n_groups:
        raise ValueError(f"lrs has {len(lrs)} values but the model has {n_groups} param groups")
    return [float(lr) for lr in lrs]


def build_optimizer(model: nn.Module, phase: PhaseConfig) -> torch.optim.Optimizer:
    """The phase's optimiser over ``model.param_groups()``; lrs are set by the scheduler."""
    groups = group_parameters(model)
    lrs = expand_lrs(phase.lrs, len(groups))
    param_groups = [{"params": params, "lr": lr} for params, lr in zip(groups, lrs, strict=True)]
    beta1 = phase.moms[0] if phase.moms else CONSTANT_BETA1
    if phase.optimizer == "adamw":
        return torch.optim.AdamW(
            param_groups, betas=(beta1, phase.beta2), weight_decay=phase.weight_decay
        )
    momentum = phase.moms[0] if phase.moms else phase.momentum
    return SGDW(param_groups, lr=lrs[0], momentum=momentum, weight_decay=phase.weight_decay)


def build_one_cycle(
    optimizer: torch.optim.Optimizer, phase: PhaseConfig, total_steps: int
) -> OneCycleLR:
    """fastai v1's one-cycle over ``total_steps`` optimiser steps (see the module docstring)."""
    if total_steps < 1:
        raise ValueError("one-cycle needs at least one step (is the training split empty?)")
    max_lrs = expand_lrs(phase.lrs, len(optimizer.param_groups))
    moms = phase.moms or (0.0, 0.0)
    return OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=total_steps,
        pct_start=phase.pct_start,
        anneal_strategy="cos",
        cycle_momentum=phase.moms is not None,
        max_momentum=moms[0],
        base_momentum=moms[1],
        div_factor=phase.div_factor,
        final_div_factor=phase.final_div / phase.div_factor,
        three_phase=False,
    )


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]
