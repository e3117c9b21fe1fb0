"""Job ``train``: a model of the PSR family on a prepared dataset (the engine's two phases).

The policies every training shares, settled here once:
- **classes**: the prepared manifest decides the class order and count; a model config that
  names another count (or other class names) is an error, never silently overwritten;
- **prior**: read from a ``priors.json`` and re-indexed to the dataset's class order by name;
- **seed -> build -> load weights -> fit**: ``train.seed`` seeds every generator before the
  network is built, so it decides the initial weights (also of each tuning trial, whatever ran
  before it), then :func:`psr.models.build_model` loads the weights the config names;
- **outputs**: ``best.pt`` and ``last.pt`` in ``out``; ``history.csv`` (rewritten every epoch)
  and ``metrics.json`` in ``reports`` (default ``out``);
- **resuming**: ``last.pt`` records the run's :func:`identity` (model config, data, prior and
  weight files, by digest; under torchrun the world size) beside its train config;
  ``resume="auto"`` continues it only when both match, so an interrupted run ends
  bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from psr.data.prepared import data_checksum, load_split, read_manifest
from psr.engine import FitResult, TrainConfig, fit
from psr.engine.distributed import is_main_process, world_size
from psr.engine.loop import Callback, seed_everything
from psr.fileio import config_digest, sha256, write_json
from psr.jobs.history import HISTORY_FILE, METRICS_FILE, HistoryFile, write_history
from psr.models import ModelConfig, build_model
from psr.priors import prior_for_classes


@dataclass(frozen=True)
class TrainResult:
    fit: FitResult
    model: ModelConfig  # what was trained: class count and names from the dataset
    metrics: dict[str, Any]  # also in metrics.json


def model_for_dataset(cfg: ModelConfig, class_names: Sequence[str]) -> ModelConfig:
    """``cfg`` with the dataset's class count and names; a contradiction is an error."""
    names = list(class_names)
    if "num_classes" in cfg.model_fields_set and cfg.num_classes != len(names):
        raise ValueError(
            f"model.num_classes is {cfg.num_classes} but the prepared dataset has {len(names)} "
            f"classes {names}"
        )
    if cfg.class_names is not None and list(cfg.class_names) != names:
        raise ValueError(f"model.class_names {cfg.class_names} differ from the dataset's {names}")
    return cfg.model_copy(update={"num_classes": len(names), "class_names": names})


def identity(
    model: ModelConfig, data: str | Path, prior: str | Path | None, splits: Sequence[str]
) -> dict[str, str]:
    """What a training depends on besides its train config, as digests (``last.pt`` keeps
    them): a file replaced under the same name (new SR weights) makes another run."""
    found = {
        "model": config_digest(model.model_dump(mode="json")),
        "data": _data_digest(Path(data), splits),
        "splits": ",".join(splits),
    }
    if prior is not None:
        found["prior"] = sha256(prior)
    sr = model.sr_weights if isinstance(model.sr_weights, dict) else {2: model.sr_weights}
    for scale, path in sorted(sr.items()):
        if path is not None:
            found[f"sr_weights x{scale}"] = sha256(path)
    if model.pretrained not in ("imagenet", "none"):
        found["pretrained weights"] = sha256(model.pretrained)
    return found


def _data_digest(root: Path, splits: Sequence[str]) -> str:
    """The manifest's checksums (``psr prepare`` writes them), else the split files' bytes."""
    manifest = read_manifest(root)
    if manifest.get("checksums"):
        return data_checksum(manifest)
    files = [root / f"{split}{ext}" for split in splits for ext in (".npy", ".csv")]
    return config_digest([sha256(f) for f in files])


def _world() -> dict[str, str]:
    """Under torchrun, the number of processes: each trains on its shard of every batch, so a
    state of 2 processes is not one a single process (or 4) could continue bit-identically."""
    size = world_size()
    return {"world_size": str(size)} if size > 1 else {}


def summary(result: FitResult) -> dict[str, Any]:
    """The numbers a training run is judged by (``metrics.json``)."""
    best = result.history[result.best_epoch - 1]  # epochs are numbered from 1
    return {
        "best_valid_acc": float(result.best_metric),
        "best_valid_loss": float(best["valid_loss"]),
        "best_epoch": int(result.best_epoch),
        "epochs": len(result.history),
        "stopped_early": bool(result.stopped_early),
    }


def run(
    model: ModelConfig,
    train: TrainConfig,
    data: str | Path,
    out: str | Path,
    *,
    prior: str | Path | None = None,
    reports: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool | Literal["auto"] = False,
    train_split: str = "train",
    valid_split: str = "valid",
) -> TrainResult:
    """Train ``model`` with ``train`` on ``data``; see the module docstring for the rules.

    ``prior`` (a priors.json) is needed by the PDLS losses. Each callback gets ``(epoch,
    metrics)`` after every epoch, once ``last.pt`` is written; an exception it raises (e.g.
    ``optuna.TrialPruned``) propagates and leaves a resumable run. Under ``torchrun`` every
    process calls ``run`` and rank 0 writes the files. ``resume``: see :func:`psr.engine.fit`
    (``"auto"`` continues ``out/last.pt`` if it is this run's, else starts fresh).
    """
    out, reports = Path(out), Path(reports or out)
    class_names = tuple(read_manifest(data)["class_names"])
    model = model_for_dataset(model, class_names)
    matrix = prior_for_classes(prior, class_names) if prior is not None else None
    train_data, valid_data = load_split(data, train_split), load_split(data, valid_split)

    seed_everything(train.seed)  # the same initial weights on every run and torchrun rank
    network = build_model(model)
    history = HistoryFile(reports / HISTORY_FILE)
    result = fit(
        network,
        train_data,
        valid_data,
        train,
        out,
        prior=matrix,
        callbacks=[history, *callbacks],
        resume=resume,
        identity=identity(model, data, prior, (train_split, valid_split)) | _world(),
        class_names=class_names,
        model_config=model.model_dump(),
        image_size=model.image_size,
    )
    metrics = summary(result)
    if is_main_process():
        write_history(reports / HISTORY_FILE, result.history)  # complete, also after a resume
        write_json(reports / METRICS_FILE, metrics)
    return TrainResult(fit=result, model=model, metrics=metrics)
