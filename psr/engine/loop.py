"""The training loop: two one-cycle phases, validation every epoch, resumable checkpoints.

Read :func:`fit` top to bottom: set up (device, DDP, data, loss, resume), then for each phase
build its optimiser and one-cycle schedule, and for each epoch train, validate, record, write
checkpoints, call the callbacks and maybe stop early. :func:`train_one_epoch` and
:func:`evaluate` are the two inner loops.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from psr.data.torch_dataset import SplitLike
from psr.engine import checkpoint as ckpt
from psr.engine.config import TrainConfig
from psr.engine.distributed import barrier, broadcast_buffers, distributed, reduce_sums
from psr.engine.loaders import build_loaders
from psr.engine.runtime import Runtime, resolve_device
from psr.engine.schedule import build_one_cycle, build_optimizer, current_lrs

log = logging.getLogger(__name__)

#: Called as ``callback(epoch, metrics)`` after every epoch; epoch is global and 0-based.
Callback = Callable[[int, dict[str, float]], None]

LAST = "last.pt"
BEST = "best.pt"
#: Fields that may differ between a run and its resumption: they do not change the recipe.
RESUME_FREE_FIELDS = frozenset(
    {
        "workers",
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "progress",
        "device",
        "amp",
        "channels_last",
        "compile",
        "cudnn_benchmark",
        "early_stopping",
    }
)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``last.pt`` still holds the last good epoch."""


@dataclass
class FitResult:
    best_metric: float  # validation accuracy (fused prediction) of the best epoch
    best_epoch: int  # global epoch index, 0-based across both phases
    history: list[dict[str, float]]  # one metrics dict per epoch
    last_checkpoint: Path  # full training state (resumable)
    best_checkpoint: Path  # inference checkpoint (psr.models.save_model)
    stopped_early: bool = False


def fit(
    model: nn.Module,
    train_split: SplitLike,
    valid_split: SplitLike,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    prior: Any = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    class_names: Sequence[str] | None = None,
    model_config: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> FitResult:
    """Train ``model`` (branch logits ``[B, n, K]``, with ``param_groups()``) with the two-phase
    one-cycle recipe and keep the epoch with the best validation accuracy as ``best.pt``.

    ``prior`` is the ``[K, K]`` matrix the PDLS losses need. ``class_names``, ``model_config``
    and ``image_size`` (stored in ``best.pt``) default to the split's names and the model's
    ``config`` / ``image_size``; ``channels`` (stored as ``extra["channels"]``: 1 makes
    ``psr.inference.Predictor`` convert colour photos to gray) to the training images'. Each
    callback gets ``(epoch, metrics)`` after every epoch, on rank 0, once ``last.pt`` is
    written: an exception it raises (e.g. ``optuna.TrialPruned``) propagates and leaves a
    resumable run. Under ``torchrun`` every process calls ``fit`` and rank 0 writes the files.
    """
    from psr.losses import build_loss

    out_dir = Path(out_dir)
    last_path, best_path = out_dir / LAST, out_dir / BEST
    class_names = tuple(class_names or train_split.class_names)
    # what best.pt records besides the weights (psr.models.save_model's arguments)
    best_info = {
        "config": dict(model_config if model_config is not None else _model_config(model)),
        "class_names": class_names,
        "image_size": int(image_size or _model_image_size(model)),
    }
    channels = int(channels or _image_channels(train_split))
    if tuple(valid_split.class_names) != tuple(train_split.class_names):
        raise ValueError(
            f"train and valid class orders differ: {list(train_split.class_names)} vs "
            f"{list(valid_split.class_names)}"
        )
    device = resolve_device(cfg.device)
    with distributed(device.type) as dist_info:
        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        rt = Runtime.create(cfg, device, dist_info)
        main = dist_info.is_main
        # dropout differs per rank; data order and augmentation have their own seeds
        seed_everything(cfg.seed + dist_info.rank)

        loss_fn = build_loss(
            cfg.loss.name,
            len(class_names),
            prior=prior,
            alpha=cfg.loss.alpha,
            gamma=cfg.loss.gamma,
        ).to(device)
        scaler = rt.grad_scaler()
        model.to(device=device, memory_format=rt.memory_format)
        pin = cfg.pin_memory and device.type == "cuda"
        loaders = build_loaders(
            train_split, valid_split, cfg, best_info["image_size"], dist_info, pin
        )

        state = ckpt.initial_state()
        if resume and last_path.is_file():
            state = ckpt.load_state(last_path)
            _check_resumable(state, cfg, last_path)
            model.load_state_dict(state["model"])
            if state["scaler"]:  # one loss scale across both phases; empty without fp16
                scaler.load_state_dict(state["scaler"])
            ckpt.restore_rng_states(state["rng"], device)  # rank 0's: exact for a single process
            if dist_info.rank > 0:
                seed_everything(cfg.seed + dist_info.rank + 7919 * state["epoch"])
            log.info("resuming %s after epoch %d", last_path, state["epoch"])
        elif resume and main:
            log.info("no %s yet: starting from scratch", last_path)

        train_model: nn.Module = model
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            train_model = DistributedDataParallel(model, device_ids=ids)
        eval_model: nn.Module = model
        if cfg.compile:
            train_model, eval_model = torch.compile(train_model), torch.compile(model)

        history: list[dict[str, float]] = state["history"]
        epoch, stopped = state["epoch"], state["stopped"]  # epoch = global epochs completed
        bar = tqdm(
            total=cfg.total_epochs,
            initial=epoch,
            desc="epochs",
            unit="ep",
            disable=not (cfg.progress and main),
        )
        phase_end = 0
        for phase_index, phase in enumerate(cfg.phases):
            phase_end += phase.epochs
            if stopped or epoch >= phase_end:
                continue
            optimizer = build_optimizer(model, phase)
            scheduler = build_one_cycle(optimizer, phase, phase.epochs * len(loaders.train))
            if state["optimizer"] is not None and state["phase"] == phase_index:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])

            while epoch < phase_end and not stopped:
                where = f"phase {phase_index + 1}, epoch {epoch + 1}/{cfg.total_epochs}"
                loaders.train_sampler.set_epoch(epoch)
                train_metrics = train_one_epoch(
                    train_model,
                    loss_fn,
                    optimizer,
                    scheduler,
                    scaler,
                    loaders.train,
                    rt,
                    where=where,
                    last_good=last_path,
                    progress=cfg.progress and main,
                )
                broadcast_buffers(model, dist_info)  # every rank validates the same model
                valid_metrics = evaluate(eval_model, loss_fn, loaders.valid, rt)
                if not math.isfinite(valid_metrics["valid_loss"]):
                    # a finite training loss does not mean finite weights (the epoch's last step)
                    raise NonFiniteLossError(
                        f"validation loss is {valid_metrics['valid_loss']} after {where}: the "
                        f"weights are not finite; {last_path} holds the last good epoch"
                    )
                metrics = {"epoch": epoch, "phase": phase_index + 1}
                metrics |= train_metrics | valid_metrics
                history.append(metrics)
                epoch += 1
                stopped = _should_stop(history, cfg.early_stopping) and epoch < cfg.total_epochs

                if main:
                    if _best_epoch(history) == len(history) - 1:
                        augment = cfg.augment.model_dump()
                        _save_best(best_path, model, best_info, channels, metrics, augment)
                    ckpt.save_atomic(
                        ckpt.training_state(
                            config=cfg.model_dump(mode="json"),
                            model=model,
                            optimizer=optimizer,
                            scheduler=scheduler,
                            scaler=scaler,
                            epoch=epoch,
                            phase=phase_index,
                            history=history,
                            stopped=stopped,
                            device=device,
                        ),
                        last_path,
                    )
                    bar.update(1)
                    bar.set_postfix(valid_acc=f"{metrics['valid_acc']:.4f}")
                    log.info(_format_epoch(metrics, cfg.total_epochs))
                barrier(dist_info)
                if main:
                    for callback in callbacks:
                        callback(metrics["epoch"], dict(metrics))
            if stopped:
                log.info("early stopping: no better valid_acc for %d epochs", cfg.early_stopping)
        bar.close()

    best_epoch = _best_epoch(history)
    return FitResult(
        best_metric=history[best_epoch]["valid_acc"],
        best_epoch=best_epoch,
        history=history,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        stopped_early=stopped,
    )


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
    batches = tqdm(loader, desc=where, leave=False, unit="batch", disable=not progress)
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
def evaluate(
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """A resumed run must follow the same recipe (the one-cycle length depends on it)."""
    saved, now = state["config"], cfg.model_dump(mode="json")
    changed = sorted(k for k in now if k not in RESUME_FREE_FIELDS and saved.get(k) != now[k])
    if changed:
        raise ValueError(f"cannot resume {path}: the training config differs in {changed}")


def _best_epoch(history: list[dict[str, float]]) -> int:
    """The first epoch with the highest validation accuracy."""
    return max(range(len(history)), key=lambda i: (history[i]["valid_acc"], -i))


def _should_stop(history: list[dict[str, float]], patience: int | None) -> bool:
    return patience is not None and len(history) - 1 - _best_epoch(history) >= patience


def _save_best(
    path: Path,
    model: nn.Module,
    info: dict[str, Any],
    channels: int,
    metrics: dict[str, float],
    augment: dict[str, Any],
) -> None:
    from psr.models import save_model

    extra = {
        "epoch": int(metrics["epoch"]),
        "valid_acc": float(metrics["valid_acc"]),
        "channels": channels,
        "augment": augment,  # test-time augmentation reuses the training recipe's views
    }
    save_model(path, model, **info, extra=extra)


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("pass model_config= (the model has no .config to store in best.pt)")
    return config.model_dump() if hasattr(config, "model_dump") else dict(config)


def _model_image_size(model: nn.Module) -> int:
    size = getattr(model, "image_size", None)
    if size is None:
        raise ValueError("pass image_size= (the model has no .image_size)")
    return int(size)


def _image_channels(split: SplitLike) -> int:
    """Channels of the split's uint8 images ``[N, H, W, C]`` (``[N, H, W]``: gray)."""
    images = split.images
    channels = images.shape[-1] if images.ndim == 4 else 1
    if images.ndim not in (3, 4) or channels not in (1, 3):
        raise ValueError(f"training images must be [N, H, W, 1 or 3], got {list(images.shape)}")
    return int(channels)


def _format_epoch(m: dict[str, float], total: int) -> str:
    return (
        f"epoch {int(m['epoch']) + 1}/{total} (phase {int(m['phase'])}): "
        f"train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f} | "
        f"valid loss {m['valid_loss']:.4f} acc {m['valid_acc']:.4f} | "
        f"{m['images_per_s']:.0f} img/s"
    )
