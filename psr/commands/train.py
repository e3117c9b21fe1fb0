"""``psr train``: train a PSR model on a prepared dataset (single process or under torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "train a model on a prepared dataset: writes last.pt (resumable), best.pt, history.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="run directory (last.pt, best.pt, ...)")
    parser.add_argument("--config", help="training YAML (psr.engine.TrainConfig fields)")
    parser.add_argument("--model-config", help="model YAML (psr.models.ModelConfig fields)")
    parser.add_argument("--prior", help="priors.json from `psr priors` (needed by pdls losses)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--train-split", default="train", help="split to train on")
    parser.add_argument("--valid-split", default="valid", help="split that selects best.pt")
    over = parser.add_argument_group("overrides of the YAML files")
    over.add_argument("--epochs1", type=int, help="phase-1 (AdamW) epochs")
    over.add_argument("--epochs2", type=int, help="phase-2 (SGD) epochs")
    over.add_argument("--batch-size", type=int, help="per-process batch size")
    over.add_argument("--device", choices=("auto", "cpu", "cuda"))
    over.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"))
    over.add_argument("--workers", type=int, help="DataLoader workers")
    over.add_argument("--seed", type=int)
    over.add_argument("--data-fraction", type=float, help="fraction of the training split")
    over.add_argument("--loss", help="loss name (pdls, uniform_ls, soft_ce, ce, focal_pdls)")
    over.add_argument("--model", help="model family member (psr, psr_nostn, vgg16, ...)")
    over.add_argument("--image-size", type=int, help="model input side S")
    over.add_argument("--quiet", action="store_true", help="no progress bars")


def _read_yaml(path: str | None) -> dict[str, Any]:
    import yaml

    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a mapping of fields, got {type(data).__name__}")
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``_set(d, "phase1.epochs", 3)``: nested override, skipped when ``value`` is None."""
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def train_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from psr.engine import TrainConfig

    data = _read_yaml(args.config)
    for dotted, value in [
        ("phase1.epochs", args.epochs1),
        ("phase2.epochs", args.epochs2),
        ("batch_size", args.batch_size),
        ("device", args.device),
        ("amp", args.amp),
        ("workers", args.workers),
        ("seed", args.seed),
        ("data_fraction", args.data_fraction),
        ("loss.name", args.loss),
        ("progress", False if args.quiet else None),
    ]:
        _set(data, dotted, value)
    try:
        return TrainConfig(**data)
    except ValidationError as err:
        raise ValueError(f"training config {args.config or '(defaults)'}: {err}") from None


def model_config(args: argparse.Namespace, class_names: tuple[str, ...]) -> Any:
    from pydantic import ValidationError

    from psr.models import ModelConfig

    data = _read_yaml(args.model_config)
    _set(data, "name", args.model)
    _set(data, "image_size", args.image_size)
    data["num_classes"] = len(class_names)
    data.setdefault("class_names", list(class_names))
    try:
        return ModelConfig(**data)
    except ValidationError as err:
        raise ValueError(f"model config {args.model_config or '(defaults)'}: {err}") from None


def load_prior(path: str | None, class_names: tuple[str, ...]) -> Any:
    """The prior matrix in the dataset's class order, or None without ``--prior``."""
    if path is None:
        return None
    from psr.priors import load_priors, reindex

    names, matrix = load_priors(path)
    if names != class_names:
        missing = sorted(set(class_names) - set(names))
        if missing:
            raise ValueError(f"{path}: prior has no rows for classes {missing}")
        matrix = reindex(matrix, names, class_names)
    return matrix


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import sys

    import torch

    from psr.data.prepared import load_split, read_manifest
    from psr.engine import NonFiniteLossError, fit
    from psr.engine.distributed import launched_by_torchrun
    from psr.models import build_model

    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING, format="%(message)s"
    )
    cfg = train_config(args)
    class_names = tuple(read_manifest(args.data)["class_names"])
    mcfg = model_config(args, class_names)
    prior = load_prior(args.prior, class_names)
    train = load_split(args.data, args.train_split)
    valid = load_split(args.data, args.valid_split)

    torch.manual_seed(cfg.seed)  # the same initial weights on every torchrun rank
    model = build_model(mcfg)
    try:
        result = fit(
            model,
            train,
            valid,
            cfg,
            args.out,
            prior=prior,
            resume=args.resume,
            class_names=class_names,
            model_config=mcfg.model_dump(),
            image_size=mcfg.image_size,
        )
    except NonFiniteLossError as err:
        print(f"psr train: error: {err}", file=sys.stderr)
        return 1
    if main_process:
        out = Path(args.out)
        tmp = out / ".history.json.tmp"
        tmp.write_text(json.dumps(result.history, indent=1) + "\n")
        tmp.replace(out / "history.json")
        where = " (torchrun)" if launched_by_torchrun() else ""
        print(
            f"best valid_acc {result.best_metric:.4f} at epoch {result.best_epoch + 1}{where}; "
            f"{result.best_checkpoint}, {result.last_checkpoint}"
        )
    return 0
