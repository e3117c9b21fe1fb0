"""GPU check of the paper's configuration (PSR, VGG16-bn width 1, EDSR 64x16, S=96, batch 64):
training images/s and peak GPU memory in fp32, bf16 (fp16 where bf16 is unsupported),
bf16 + channels_last and bf16 + channels_last + torch.compile; the augmenting loader's images/s
(FER+-like 48 px gray -> S) beside them; and a short real training (``psr.engine.fit``) on
learnable synthetic faces, to see its loss fall. Under 5 minutes on one H100/H200.

    .venv/bin/python bench/gpu.py --out DIR [--batch-size 64] [--steps 30] [--workers 8] \\
        [--no-compile] [--train-steps 200]
    .venv/bin/python bench/gpu.py --device cpu --out DIR   # tiny sizes, fp32 only: CI's check

Writes DIR/gpu_check.json and DIR/gpu_check.md (tables to paste into BENCHMARKS.md). Without
CUDA, ``--device auto`` (the default) and ``--device cuda`` say so and exit with status 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from throughput import RandomSplit, loader_rate, training_rate

from psr.engine import LossConfig, PhaseConfig, TrainConfig, fit
from psr.engine.runtime import resolve_amp
from psr.fileio import write_json, write_text
from psr.models import create_model

#: The paper: S=96, full-width VGG16-bn, EDSR-baseline (64 features, 16 blocks).
PAPER = {"image_size": 96, "width": 1.0, "sr_features": 64, "sr_res_blocks": 16}
#: The smallest PSR (its low branch must survive VGG's five pools: S >= 64): CPU exercises the
#: same code path in seconds.
TINY = {"image_size": 64, "width": 0.125, "sr_features": 8, "sr_res_blocks": 1}
#: Per device: model, batch size, timed steps per variant, loader workers and batches, steps of
#: the training check. CUDA's keep the whole run, compile included, well under BUDGET_S.
DEFAULTS = {
    "cuda": {
        "model": PAPER,
        "batch_size": 64,
        "steps": 30,
        "workers": min(8, os.cpu_count() or 1),
        "loader_batches": 50,
        "train": 200,
    },
    "cpu": {
        "model": TINY,
        "batch_size": 8,
        "steps": 3,
        "workers": 0,
        "loader_batches": 5,
        "train": 24,
    },
}
EPOCHS = 4  # of the training check: enough points for a falling curve
BUDGET_S = 300
CLASSES = 8
SIDE = 48  # FER+ faces: 48 px gray


class BandSplit(RandomSplit):
    """Noise faces where class c has a bright band in row block c: learnable in a few epochs.
    Rows, not columns, so the loader's horizontal flip keeps the label."""

    def __init__(self, count: int, seed: int):
        super().__init__(count, SIDE, channels=1, classes=CLASSES)
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 80, size=self.images.shape, dtype=np.uint8)
        rows = SIDE // CLASSES
        for i, c in enumerate(self.labels):
            self.images[i, c * rows : (c + 1) * rows] += 150


class Clock:
    """Progress lines stamped with the seconds since the start (the budget is wall time)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--out", type=Path, required=True, help="where the reports go")
    parser.add_argument("--batch-size", type=int, help="paper FER+: 64 (CPU: 8)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (30; CPU: 3)")
    parser.add_argument("--workers", type=int, help="loader workers (min(8, cores); CPU: 0)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument(
        "--train-steps", type=int, help=f"steps of the training check over {EPOCHS} epochs"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock()
    if args.device != "cpu" and not torch.cuda.is_available():
        print(
            "bench/gpu.py: torch sees no CUDA device; pass --device cpu for the tiny CPU run",
            file=sys.stderr,
        )
        return 1
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    defaults = DEFAULTS[device.type]
    cuda = device.type == "cuda"
    config = {
        "model": {"name": "psr", "num_classes": CLASSES, **defaults["model"]},
        "batch_size": args.batch_size or defaults["batch_size"],
        "steps": args.steps or defaults["steps"],
        "workers": defaults["workers"] if args.workers is None else args.workers,
        "compile": cuda and not args.no_compile,
        "train_steps": args.train_steps or defaults["train"],
        "loader_batches": defaults["loader_batches"],
        # "fp32" convolutions run on TF32 tensor cores unless this is off (torch's default: on)
        "cudnn_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
    }
    if cuda:
        torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "config": config,
        "date": time.strftime("%Y-%m-%d"),
    }
    arch = config["model"]
    clock.say(
        f"{report['device_name']}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"PSR width {arch['width']}, S={arch['image_size']}, batch {config['batch_size']}"
    )
    report["variants"] = measure_variants(config, device, clock)
    report["loader"] = measure_loader(config, device, report["variants"], clock)
    report["training"] = train_check(config, device, clock)
    report["loss_fell"] = report["training"]["loss_fell"]
    report["wall_s"] = round(clock.elapsed(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu_check.json", report)
    write_text(args.out / "gpu_check.md", markdown(report))
    clock.say(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    over = " OVER BUDGET" if cuda and report["wall_s"] > BUDGET_S else ""
    print(f"elapsed {report['wall_s']:.1f} s{over}", flush=True)
    return 0


def measure_variants(config: dict, device: torch.device, clock: Clock) -> list[dict]:
    """Training images/s and peak memory of each precision / layout / compile variant."""
    cuda = device.type == "cuda"
    if cuda:
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        variants = [
            ("fp32", "off", False, False),
            (amp, amp, False, False),
            (f"{amp} + channels_last", amp, True, False),
        ]
        if config["compile"]:
            variants.append((f"{amp} + channels_last + compile", amp, True, True))
    else:  # CPU autocast and compile are not what this check is for
        variants = [("fp32", "off", False, False), ("fp32 + channels_last", "off", True, False)]
    rows = []
    for name, amp_mode, channels_last, compile in variants:
        torch.manual_seed(0)
        model = create_model(**config["model"])
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        rate = training_rate(
            model,
            config["model"]["image_size"],
            config["batch_size"],
            config["steps"],
            device,
            amp=amp_mode,
            channels_last=channels_last,
            compile=compile,
            warmup=5 if compile else 3,
        )
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        base = rows[0]["images_per_s"] if rows else rate
        rows.append(
            {
                "variant": name,
                "images_per_s": round(rate, 1),
                "vs_fp32": round(rate / base, 2),
                "peak_memory_mib": None if peak is None else round(peak),
            }
        )
        memory = "" if peak is None else f", peak {peak:,.0f} MiB"
        clock.say(f"{name}: {rate:,.1f} train img/s ({rate / base:.2f}x fp32){memory}")
        del model
        if compile:
            torch._dynamo.reset()  # drop the compiled graphs before the training check
        if cuda:
            torch.cuda.empty_cache()
    return rows


def measure_loader(config: dict, device: torch.device, variants: list[dict], clock: Clock) -> dict:
    """The augmenting loader's images/s, FER+-like 48 px gray faces resized to S."""
    cuda = device.type == "cuda"
    batches = config["loader_batches"]
    split = RandomSplit(max(4 * config["batch_size"], 1024 if cuda else 64), side=SIDE)
    rate = loader_rate(
        split,
        config["model"]["image_size"],
        config["batch_size"],
        batches=batches,
        workers=config["workers"],
        pin_memory=cuda,
    )
    fastest = max(row["images_per_s"] for row in variants)
    verdict = "keeps up" if rate >= fastest else "is the bottleneck: raise --workers"
    clock.say(
        f"loader ({SIDE} px gray -> {config['model']['image_size']}, augmented, "
        f"{config['workers']} workers): {rate:,.1f} img/s, {rate / fastest:.2f}x the fastest "
        f"variant: it {verdict}"
    )
    return {
        "images_per_s": round(rate, 1),
        "workers": config["workers"],
        "batches": batches,
        "vs_fastest": round(rate / fastest, 2),
        "keeps_up": rate >= fastest,
    }


def train_check(config: dict, device: torch.device, clock: Clock) -> dict:
    """A few epochs of the real loop (psr.engine.fit: one-cycle AdamW, AMP and channels_last on
    CUDA, augmenting loader) on BandSplit; the checkpoints go to a scratch directory."""
    cuda = device.type == "cuda"
    batch = config["batch_size"]
    per_epoch = max(1, config["train_steps"] // EPOCHS)
    train, valid = BandSplit(per_epoch * batch, seed=0), BandSplit(max(2 * batch, 64), seed=1)
    cfg = TrainConfig(
        phase1=PhaseConfig(epochs=EPOCHS),
        phase2=PhaseConfig(epochs=0),
        batch_size=batch,
        loss=LossConfig(name="ce", targets="labels"),
        workers=config["workers"],
        device=device.type,
        progress=False,
    )
    torch.manual_seed(0)
    model = create_model(**config["model"])
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def progress(epoch: int, m: dict[str, float]) -> None:
        clock.say(
            f"train epoch {epoch}/{EPOCHS}: loss {m['train_loss']:.4f}, valid loss "
            f"{m['valid_loss']:.4f} acc {m['valid_acc']:.3f}, {m['images_per_s']:,.0f} img/s"
        )

    with tempfile.TemporaryDirectory() as scratch:
        result = fit(model, train, valid, cfg, scratch, callbacks=[progress])
    keys = ("train_loss", "valid_loss", "valid_acc", "images_per_s")
    curve = [{"epoch": int(m["epoch"])} | {k: float(m[k]) for k in keys} for m in result.history]
    first, last = curve[0]["train_loss"], curve[-1]["train_loss"]
    fell = math.isfinite(last) and last < first
    clock.say(f"training loss {'FELL' if fell else 'DID NOT FALL'}: {first:.4f} -> {last:.4f}")
    return {
        "epochs": EPOCHS,
        "steps_per_epoch": per_epoch,
        "train_images": len(train.labels),
        "amp": str(resolve_amp(cfg.amp, device) or "off").removeprefix("torch."),
        "channels_last": cfg.channels_last,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
        "curve": curve,
        "loss_fell": fell,
    }


def markdown(report: dict) -> str:
    """The report as Markdown tables, ready for BENCHMARKS.md."""
    c, model = report["config"], report["config"]["model"]
    lines = [
        f"{report['device_name']}, torch {report['torch']}, CUDA {report['cuda']}, "
        f"{report['date']}: PSR width {model['width']}, EDSR {model['sr_features']}x"
        f"{model['sr_res_blocks']}, S = {model['image_size']}, batch {c['batch_size']}, "
        f"{c['steps']} timed steps per row; wall {report['wall_s']:.0f} s.",
        "",
        "| variant | train images/s | vs fp32 | peak memory (MiB) |",
        "|---|---|---|---|",
    ]
    for row in report["variants"]:
        peak = "–" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:,}"
        lines.append(
            f"| {row['variant']} | {row['images_per_s']:,.1f} | {row['vs_fp32']:.2f}x | {peak} |"
        )
    load = report["loader"]
    lines += [
        f"| loader ({SIDE} px gray -> {model['image_size']}, augmented, {load['workers']} "
        f"workers) | {load['images_per_s']:,.1f} | {load['vs_fastest']:.2f}x the fastest | – |",
        "",
    ]
    train = report["training"]
    lines += [
        f"Training check (`psr.engine.fit`, {train['epochs']} epochs x "
        f"{train['steps_per_epoch']} steps, amp {train['amp']}, synthetic row-band faces):",
        "",
        "| epoch | train loss | valid loss | valid acc | images/s |",
        "|---|---|---|---|---|",
    ]
    for m in train["curve"]:
        lines.append(
            f"| {m['epoch']} | {m['train_loss']:.4f} | {m['valid_loss']:.4f} | "
            f"{m['valid_acc']:.3f} | {m['images_per_s']:,.0f} |"
        )
    lines += ["", f"Loss fell: {'yes' if report['loss_fell'] else 'NO'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
