"""The training loop: two one-cycle phases, validation every epoch, resumable checkpoints.

Read :func:`fit` top to bottom: set up (device, DDP, data, loss, resume), then run each phase
(:func:`_run_phase`: its optimiser and one-cycle schedule, then epochs). Every epoch trains and
validates (:func:`_run_epoch`, with the inner loops of :mod:`psr.engine.epoch`), then
:func:`_record_epoch` writes the checkpoints and calls the callbacks.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from psr.data.torch_dataset import SplitLike
from psr.device import resolve_device
from psr.engine import checkpoint as ckpt
from psr.engine.config import RESUME_FREE_FIELDS, TrainConfig
from psr.engine.distributed import DistInfo, barrier, broadcast_buffers, distributed
from psr.engine.epoch import NonFiniteLossError, train_one_epoch, validate
from psr.engine.loaders import Loaders, build_loaders
from psr.engine.outputs import Outputs
from psr.engine.runtime import Runtime
from psr.engine.schedule import build_one_cycle, build_optimizer
from psr.faults import failpoint
from psr.progress import Bar, progress_bar

log = logging.getLogger(__name__)

#: Called as ``callback(epoch, metrics)`` after every epoch; ``epoch`` is the global epoch
#: number, 1-based (the ``epoch`` of ``metrics``, ``history.csv`` and the log lines).
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    best_metric: float  # validation accuracy (fused prediction) of the selected epoch
    best_epoch: int  # the selected epoch (cfg.selection): global epoch number, 1-based
    history: list[dict[str, float]]  # one metrics dict per epoch, ``epoch`` 1-based
    last_checkpoint: Path  # full training state (resumable)
    best_checkpoint: Path  # inference checkpoint (psr.models.save_model)
    stopped_early: bool = False


@dataclass
class _Setup:
    """What the epochs compute with, built once per fit call on every rank."""

    rt: Runtime  # device, DDP rank, mixed precision, memory format
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    loaders: Loaders


@dataclass
class _Run:
    """Everything an epoch needs besides the phase's optimiser and schedule."""

    cfg: TrainConfig
    model: nn.Module  # the bare model: state dicts, buffers, best.pt
    train_model: nn.Module  # the model wrapped for DDP and/or torch.compile
    eval_model: nn.Module
    setup: _Setup
    out: Outputs
    callbacks: Sequence[Callback]
    bar: Bar  # epochs
    identity: Mapping[str, str] | None  # stored in last.pt: whose state it is

    @property
    def dist(self) -> DistInfo:
        return self.setup.rt.dist


@dataclass
class _Progress:
    """How far the run is: the parts of ``last.pt`` that change every epoch."""

    history: list[dict[str, float]]  # one metrics dict per completed epoch
    epoch: int  # global epochs completed
    stopped: bool  # stopped early: later phases are skipped


def fit(
    model: nn.Module,
    train_split: SplitLike,
    valid_split: SplitLike,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    prior: Any = None,
    callbacks: Sequence[Callback] = (),
    resume: bool | Literal["auto"] = False,
    identity: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    model_config: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> FitResult:
    """Train ``model`` (branch logits ``[B, n, K]``, with ``param_groups()``) with the two-phase
    one-cycle recipe and keep the epoch that ``cfg.selection`` picks as ``best.pt`` (official:
    each phase's lowest validation loss, the next phase starting from it).

    ``prior`` is the ``[K, K]`` matrix the PDLS losses need. ``class_names``, ``model_config``
    and ``image_size`` (stored in ``best.pt``) default to the split's names and the model's
    ``config`` / ``image_size``; ``channels`` (stored as ``extra["channels"]``: 1 makes
    ``psr.inference.Predictor`` convert colour photos to gray) to the training images'. Each
    callback gets ``(epoch, metrics)`` after every epoch, on rank 0, once ``last.pt`` is
    written: an exception it raises (e.g. ``optuna.TrialPruned``) propagates and leaves a
    resumable run. Under ``torchrun`` every process calls ``fit`` and rank 0 writes the files.

    ``resume=True`` continues ``last.pt`` (an error if it is not this run's); ``"auto"``
    continues it when it is a valid state of the same training config and ``identity`` (what
    else the caller's run depends on: data, weights files), and starts fresh, saying why,
    otherwise. ``identity`` is stored in ``last.pt``.
    """
    out = Outputs.create(
        Path(out_dir), model, train_split, class_names, model_config, image_size, channels
    )
    _check_class_order(train_split, valid_split)
    device = resolve_device(cfg.device)
    with distributed(device.type) as dist_info:
        setup = _setup(model, train_split, valid_split, cfg, device, dist_info, prior, out)
        state = (
            _resume(model, setup, cfg, out.last, identity, strict=resume is True)
            if resume
            else ckpt.initial_state()
        )
        progress = _Progress(state["history"], state["epoch"], state["stopped"])
        train_model, eval_model = _wrap(model, cfg, setup.rt)
        bar = progress_bar(
            total=cfg.total_epochs,
            initial=progress.epoch,
            desc="epochs",
            unit="epoch",
            enabled=cfg.progress and dist_info.is_main,
        )
        run = _Run(cfg, model, train_model, eval_model, setup, out, callbacks, bar, identity)
        phase_end = 0
        for phase_index, phase in enumerate(cfg.phases):
            phase_end += phase.epochs
            if not progress.stopped and progress.epoch < phase_end:
                _run_phase(run, phase_index, phase_end, progress, state)
        bar.close()

    best = progress.history[_best_epoch(progress.history, cfg.selection)]
    return FitResult(
        best_metric=best["valid_acc"],
        best_epoch=int(best["epoch"]),
        history=progress.history,
        last_checkpoint=out.last,
        best_checkpoint=out.best,
        stopped_early=progress.stopped,
    )


def _setup(
    model: nn.Module,
    train_split: SplitLike,
    valid_split: SplitLike,
    cfg: TrainConfig,
    device: torch.device,
    dist_info: DistInfo,
    prior: Any,
    out: Outputs,
) -> _Setup:
    """Seed, build the loss, move ``model`` to its device and layout, and build the loaders."""
    from psr.losses import build_loss
    from psr.models.layout import set_cpu_channels_last

    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    rt = Runtime.create(cfg, device, dist_info)
    # dropout differs per rank; data order and augmentation have their own seeds
    seed_everything(cfg.seed + dist_info.rank)
    loss_fn = build_loss(
        cfg.loss.name,
        len(out.model_info["class_names"]),
        prior=prior,
        alpha=cfg.loss.alpha,
        gamma=cfg.loss.gamma,
    ).to(device)
    scaler = rt.grad_scaler()
    if device.type == "cpu":  # on CUDA rt.memory_format decides the layout
        set_cpu_channels_last(model, cfg.channels_last)
    model.to(device=device, memory_format=rt.memory_format)
    pin = cfg.pin_memory and device.type == "cuda"
    image_size = out.model_info["image_size"]
    loaders = build_loaders(train_split, valid_split, cfg, image_size, dist_info, pin)
    return _Setup(rt, loss_fn, scaler, loaders)


def _resume(
    model: nn.Module,
    setup: _Setup,
    cfg: TrainConfig,
    path: Path,
    identity: Mapping[str, str] | None,
    *,
    strict: bool,
) -> dict[str, Any]:
    """The state in ``path`` with the weights, loss scale and RNGs restored from it, or a fresh
    state when there is no ``path`` yet, or (not ``strict``) when it is not this run's."""
    dist_info = setup.rt.dist
    if not path.is_file():
        if dist_info.is_main:
            log.info("no %s yet: starting from scratch", path)
        return ckpt.initial_state()
    try:
        state = ckpt.load_state(path)
        conflict = _resume_conflict(state, cfg, identity)
    except ValueError as err:
        if strict:
            raise
        conflict = str(err)
    if conflict is not None:
        if strict:
            raise ValueError(f"cannot resume {path}: {conflict}")
        if dist_info.is_main:
            log.warning("not resuming %s (%s): starting from scratch", path, conflict)
        return ckpt.initial_state()
    model.load_state_dict(state["model"])
    if state["scaler"]:  # one loss scale across both phases; empty without fp16
        setup.scaler.load_state_dict(state["scaler"])
    ckpt.restore_rng_states(state["rng"], setup.rt.device)  # rank 0's: exact for one process
    if dist_info.rank > 0:
        seed_everything(cfg.seed + dist_info.rank + 7919 * state["epoch"])
    log.info("resuming %s after epoch %d", path, state["epoch"])
    return state


def _wrap(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> tuple[nn.Module, nn.Module]:
    """The models to train and validate: DDP (training only) and torch.compile around ``model``.
    Called after resuming: wrapping in DDP broadcasts rank 0's restored weights."""
    train_model: nn.Module = model
    if rt.dist.enabled:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        return torch.compile(train_model), torch.compile(model)
    return train_model, model


def _run_phase(
    run: _Run, index: int, phase_end: int, progress: _Progress, state: dict[str, Any]
) -> None:
    """Phase ``index`` (0-based) from ``progress.epoch`` to global epoch ``phase_end`` or an early
    stop; ``state`` (the resumed one) holds its optimiser and schedule if it stopped mid-phase."""
    cfg = run.cfg
    phase = cfg.phases[index]
    optimizer = build_optimizer(run.model, phase)
    scheduler = build_one_cycle(optimizer, phase, phase.epochs * len(run.setup.loaders.train))
    if state["optimizer"] is not None and state["phase"] == index:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    elif cfg.selection == "official" and progress.history:
        _start_from_best(run)
    while progress.epoch < phase_end and not progress.stopped:
        metrics = _run_epoch(run, index, progress.epoch, optimizer, scheduler)
        progress.history.append(metrics)
        progress.epoch += 1
        progress.stopped = (
            _should_stop(progress.history, cfg.selection, cfg.early_stopping)
            and progress.epoch < cfg.total_epochs
        )
        _record_epoch(run, progress, index, optimizer, scheduler)
    if progress.stopped:
        log.info("early stopping: no better epoch (%s) for %d", cfg.selection, cfg.early_stopping)


def _run_epoch(
    run: _Run,
    phase_index: int,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, float]:
    """Train and validate the epoch after ``epoch`` completed ones (the ``epoch + 1``-th, the
    number its metrics carry); returns its metrics."""
    cfg, setup = run.cfg, run.setup
    start = time.perf_counter()
    where = f"phase {phase_index + 1}, epoch {epoch + 1}/{cfg.total_epochs}"
    setup.loaders.train_sampler.set_epoch(epoch)
    train_metrics = train_one_epoch(
        run.train_model,
        setup.loss_fn,
        optimizer,
        scheduler,
        setup.scaler,
        setup.loaders.train,
        setup.rt,
        where=where,
        last_good=run.out.last,
        progress=cfg.progress and run.dist.is_main,
    )
    broadcast_buffers(run.model, run.dist)  # every rank validates the same model
    valid_metrics = validate(run.eval_model, setup.loss_fn, setup.loaders.valid, setup.rt)
    if not math.isfinite(valid_metrics["valid_loss"]):
        # a finite training loss does not mean finite weights (the epoch's last step)
        raise NonFiniteLossError(
            f"validation loss is {valid_metrics['valid_loss']} after {where}: the "
            f"weights are not finite; {run.out.last} holds the last good epoch"
        )
    seconds = {"epoch_seconds": time.perf_counter() - start}
    return {"epoch": epoch + 1, "phase": phase_index + 1} | train_metrics | valid_metrics | seconds


def _record_epoch(
    run: _Run,
    progress: _Progress,
    phase_index: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """For the epoch just added to ``progress``: rank 0 writes ``best.pt`` (on a new best) and
    ``last.pt``, then calls the callbacks once every rank is done with the epoch."""
    metrics = progress.history[-1]
    if run.dist.is_main:
        if _best_epoch(progress.history, run.cfg.selection) == len(progress.history) - 1:
            run.out.save_best(run.model, metrics, run.cfg.augment.model_dump())
        state = ckpt.training_state(
            config=run.cfg.model_dump(mode="json"),
            identity=dict(run.identity or {}),
            model=run.model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=run.setup.scaler,
            epoch=progress.epoch,
            phase=phase_index,
            history=progress.history,
            stopped=progress.stopped,
            device=run.setup.rt.device,
        )
        ckpt.save_atomic(state, run.out.last)
        failpoint("train.epoch_saved")
        run.bar.set_postfix(valid_acc=f"{metrics['valid_acc']:.4f}")  # shown by the update
        run.bar.update(1)
        log.info(_format_epoch(metrics, run.cfg.total_epochs))
    barrier(run.dist)
    if run.dist.is_main:
        for callback in run.callbacks:
            callback(metrics["epoch"], dict(metrics))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resume_conflict(
    state: dict[str, Any], cfg: TrainConfig, identity: Mapping[str, str] | None
) -> str | None:
    """Why ``state`` is not a state of this run (None: it is). A resumed run must follow the
    same recipe (the one-cycle length depends on it) on the same inputs."""
    saved, now = state["config"], cfg.model_dump(mode="json")
    changed = sorted(k for k in now if k not in RESUME_FREE_FIELDS and saved.get(k) != now[k])
    if changed:
        return f"the training config differs in {changed}"
    if identity is not None:
        if not state.get("identity"):
            return "it records no identity (written before inputs were recorded)"
        stored = state["identity"]
        differs = sorted(k for k in {*identity, *stored} if stored.get(k) != identity.get(k))
        if differs:
            return f"it was trained on other {', '.join(differs)}"
    return None


def _check_class_order(train_split: SplitLike, valid_split: SplitLike) -> None:
    if tuple(valid_split.class_names) != tuple(train_split.class_names):
        raise ValueError(
            f"train and valid class orders differ: {list(train_split.class_names)} vs "
            f"{list(valid_split.class_names)}"
        )


def _start_from_best(run: _Run) -> None:
    """The official hand-over: a new phase starts from the previous phase's selected epoch
    (``best.pt``, written by rank 0 before the barrier that ended that epoch)."""
    from psr.models.weights import read_state_dict

    checkpoint = read_state_dict(run.out.best, "best checkpoint")
    run.model.load_state_dict(checkpoint["state_dict"])
    if run.dist.is_main:
        epoch = int(checkpoint["extra"]["epoch"])
        log.info("the next phase starts from epoch %d (%s)", epoch, run.out.best)


def _best_epoch(history: list[dict[str, float]], selection: str) -> int:
    """The index into ``history`` of the selected epoch: ``official``, the first epoch of the
    latest phase with the lowest validation loss; ``best_accuracy``, the first with the highest
    validation accuracy."""
    if selection == "official":
        phase = history[-1]["phase"]
        epochs = [i for i, m in enumerate(history) if m["phase"] == phase]
        return min(epochs, key=lambda i: (history[i]["valid_loss"], i))
    return max(range(len(history)), key=lambda i: (history[i]["valid_acc"], -i))


def _should_stop(history: list[dict[str, float]], selection: str, patience: int | None) -> bool:
    if patience is None:
        return False
    return len(history) - 1 - _best_epoch(history, selection) >= patience


def _format_epoch(m: dict[str, float], total: int) -> str:
    return (
        f"epoch {int(m['epoch'])}/{total} (phase {int(m['phase'])}): "
        f"train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f} | "
        f"valid loss {m['valid_loss']:.4f} acc {m['valid_acc']:.4f} | "
        f"{m['images_per_s']:.0f} img/s"
    )
