"""``psr sr-pretrain``: pre-train PSR's x2 super-resolution network on a prepared dataset."""

from __future__ import annotations

import argparse

HELP = "pre-train the x2 SR network on the training faces: writes sr_x2.pt, sr.json, history.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="output folder (sr_x2.pt, sr.json, ...)")
    parser.add_argument(
        "--model-config",
        help="model YAML (psr.models.ModelConfig fields): the SR kind, size and resolution S",
    )
    parser.add_argument("--config", help="pre-training YAML (psr.jobs.sr_pretrain fields)")
    over = parser.add_argument_group("overrides of the YAML files")
    over.add_argument("--image-size", type=int, help="model input side S (the net restores S)")
    over.add_argument("--steps", type=int, help="optimizer steps")
    over.add_argument("--batch-size", type=int)
    over.add_argument("--patch-size", type=int, help="side of the training patches (even)")
    over.add_argument("--valid-every", type=int, help="steps between validations")
    over.add_argument("--lr", type=float, help="Adam learning rate")
    over.add_argument("--max-images", type=int, help="train on at most this many faces")
    over.add_argument("--device", choices=("auto", "cpu", "cuda"))
    over.add_argument("--seed", type=int)


def run(args: argparse.Namespace) -> int:
    from psr.configfile import load_config
    from psr.jobs import sr_pretrain
    from psr.models import ModelConfig

    model = load_config(ModelConfig, args.model_config, "model", {"image_size": args.image_size})
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "valid_every": args.valid_every,
        "lr": args.lr,
        "max_images": args.max_images,
        "device": args.device,
        "seed": args.seed,
    }
    cfg = load_config(sr_pretrain.SRPretrainConfig, args.config, "pre-training", overrides)
    result = sr_pretrain.run(cfg, model, args.data, args.out)
    if result.weights is None:
        print(f"nothing to pre-train: {result.reason}")
        return 0
    m = result.metrics
    print(
        f"{result.weights}: PSNR {m['psnr_sr']:.2f} dB on validation faces "
        f"(bicubic {m['psnr_bicubic']:.2f} dB, gain {m['psnr_gain']:+.2f} dB), "
        f"SSIM {m['ssim_sr']:.4f} (bicubic {m['ssim_bicubic']:.4f})"
    )
    return 0
