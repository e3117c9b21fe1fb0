"""``psr train``: train a PSR model on a prepared dataset (single process or under torchrun)."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "train a model on a prepared dataset: writes last.pt (resumable), best.pt, history.csv"


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
    over.add_argument("--sr-weights", help="SR net weights, e.g. sr_x2.pt from `psr sr-pretrain`")
    over.add_argument("--quiet", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace) -> Any:
    from psr.configfile import load_config
    from psr.engine import TrainConfig

    overrides = {
        "phase1.epochs": args.epochs1,
        "phase2.epochs": args.epochs2,
        "batch_size": args.batch_size,
        "device": args.device,
        "amp": args.amp,
        "workers": args.workers,
        "seed": args.seed,
        "data_fraction": args.data_fraction,
        "loss.name": args.loss,
        "progress": False if args.quiet else None,
    }
    return load_config(TrainConfig, args.config, "training", overrides)


def model_config(args: argparse.Namespace) -> Any:
    from psr.configfile import load_config
    from psr.models import ModelConfig

    overrides = {"name": args.model, "image_size": args.image_size, "sr_weights": args.sr_weights}
    return load_config(ModelConfig, args.model_config, "model", overrides)


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from psr.engine import NonFiniteLossError
    from psr.engine.distributed import is_main_process, launched_by_torchrun
    from psr.jobs import train

    main_process = is_main_process()
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING, format="%(message)s"
    )
    try:
        result = train.run(
            model_config(args),
            train_config(args),
            args.data,
            args.out,
            prior=args.prior,
            resume=args.resume,
            train_split=args.train_split,
            valid_split=args.valid_split,
        )
    except NonFiniteLossError as err:
        print(f"psr train: error: {err}", file=sys.stderr)
        return 1
    if main_process:
        fit = result.fit
        where = " (torchrun)" if launched_by_torchrun() else ""
        print(
            f"best valid_acc {fit.best_metric:.4f} at epoch {fit.best_epoch}{where}; "
            f"{fit.best_checkpoint}, {fit.last_checkpoint}"
        )
    return 0
