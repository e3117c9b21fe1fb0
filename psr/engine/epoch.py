"""The two inner loops of :func:`psr.engine.fit`: one training pass and one validation pass over
their loaders, each returning metrics summed over this rank's shard and reduced over ranks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from psr.engine.distributed import reduce_sums
from psr.engine.runtime import Runtime
from psr.engine.schedule import current_lrs
from psr.faults import failpoint
from psr.progress import progress_bar


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``last.pt`` still holds the last good epoch."""


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: DataLoader,
    rt: Runtime,
    *,
    where: str,
    last_good: Path,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the training loader, one optimiser and scheduler step per batch; returns
    loss, accuracy of the fused prediction, images/s and the lrs of the last step."""
    from psr.models import fuse

    model.train()
    loss_sum, seen = 0.0, 0
    # on the device: reading it every step would wait for the backward pass to finish
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    lrs = current_lrs(optimizer)
    start = time.perf_counter()
    batches = progress_bar(loader, desc=where, leave=False, unit="batch", enabled=progress)
    for step, (images, targets) in enumerate(batches):
        images, targets = rt.batch(images, targets)  # [B, 3, S, S]; [B] or [B, K]
        with rt.autocast():
            logits = model(images)  # [B, n_branches, K]
            loss = loss_fn(logits, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at {where}, step {step + 1}/{len(loader)}; "
                f"{last_good} holds the last good epoch (lower the lrs, or turn amp off)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lrs = current_lrs(optimizer)  # the lrs this step used
        scheduler.step()
        failpoint("train.step")

        labels = targets.argmax(dim=1) if targets.is_floating_point() else targets  # [B]
        loss_sum += loss_value * len(labels)
        correct += (fuse(logits.detach().float()).argmax(dim=1) == labels).sum()
        seen += len(labels)
        if progress and step % 10 == 0:
            rate = seen / (time.perf_counter() - start)
            batches.set_postfix(
                loss=f"{loss_sum / seen:.4f}", acc=f"{int(correct) / seen:.4f}", img_s=f"{rate:.0f}"
            )
    rt.synchronize()
    elapsed = time.perf_counter() - start
    # ranks run in parallel: all their images over this rank's wall time
    loss_sum, correct, seen = reduce_sums([loss_sum, int(correct), seen], rt.dist, rt.device)
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "images_per_s": seen / elapsed if elapsed > 0 else 0.0,
        **{f"lr_{i}": lr for i, lr in enumerate(lrs)},
    }


@torch.inference_mode()
def validate(
    model: nn.Module, loss_fn: nn.Module, loader: DataLoader, rt: Runtime
) -> dict[str, float]:
    """Validation loss (against the int labels) and accuracy of the fused prediction (mean of
    the branch softmaxes), summed over this rank's shard and reduced over ranks."""
    from psr.models import fuse

    model.eval()
    # sums stay on the device (no wait per batch): [loss sum, correct]
    sums = torch.zeros(2, dtype=torch.float64, device=rt.device)
    seen = 0
    for images, labels in loader:
        images, labels = rt.batch(images, labels)
        with rt.autocast():
            logits = model(images).float()  # [B, n_branches, K]
        sums[0] += loss_fn(logits, labels) * len(labels)
        sums[1] += (fuse(logits).argmax(dim=1) == labels).sum()
        seen += len(labels)
    loss_sum, correct = sums.tolist()
    loss_sum, correct, seen = reduce_sums([loss_sum, correct, seen], rt.dist, rt.device)
    return {"valid_loss": loss_sum / max(seen, 1), "valid_acc": correct / max(seen, 1)}
