"""The resumable training state (``last.pt``): written atomically, loaded with
``weights_only=True`` (tensors and primitive containers only, RNG states included)."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psr.fileio import atomic_write

#: Version 2 numbers the epochs of ``history`` from 1; a version-1 state (0-based) is refused:
#: ``resume="auto"`` starts such a run afresh, ``resume=True`` says why it cannot continue it.
FORMAT = "psr-train-state/2"
OLD_FORMATS = {"psr-train-state/1": "its history numbers epochs from 0 (this version: from 1)"}


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` atomically: a crash mid-write leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save(obj, f))


def training_state(
    *,
    config: dict[str, Any],
    identity: dict[str, str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    phase: int,
    history: list[dict[str, float]],
    stopped: bool,
    device: torch.device,
) -> dict[str, Any]:
    """Everything a resumed run needs to continue bit for bit: ``epoch`` global epochs are done
    (so the last row of ``history`` is epoch number ``epoch``),
    the last of them in ``phase`` (0-based) whose optimiser/scheduler/scaler states these are;
    ``identity``: what else the run depends on (data, weights files), as digests."""
    return {
        "format": FORMAT,
        "config": config,
        "identity": identity,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(device),
        "epoch": epoch,
        "phase": phase,
        "history": history,
        "stopped": stopped,
    }


def initial_state() -> dict[str, Any]:
    """The state of a run that has not trained yet."""
    return {
        "epoch": 0,
        "phase": 0,
        "history": [],
        "stopped": False,
        "optimizer": None,
        "scheduler": None,
        "scaler": None,
    }


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        # weights_only refuses pickled objects; a truncated file fails to unzip
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a loadable training checkpoint: {first}") from None
    if isinstance(state, dict) and state.get("format") in OLD_FORMATS:
        why = OLD_FORMATS[state["format"]]
        raise ValueError(f"{path} is an older training state ({state['format']}): {why}")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a PSR training checkpoint (expected format {FORMAT})")
    return state


def rng_states(device: torch.device) -> dict[str, Any]:
    """python, numpy, torch CPU and (training on CUDA) ``device``'s generator states, as
    tensors/lists. Only the training device: ``get_rng_state_all`` would open a CUDA context on
    every GPU of the machine in every DDP process."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
