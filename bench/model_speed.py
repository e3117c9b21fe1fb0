"""Training speed of the PSR family on CPU: forward+backward images/s and FLOPs per image.

Compares the paper's PSR (width 1, S=96, K=8, EDSR 64x16) with the single-scale vgg16_bn
baseline at the same S, and the embedded default of params.yaml (S=64, width 0.125, EDSR 16x2).
Each model runs in the CPU layout it uses by default (channels_last, psr.models.layout) and in
plain NCHW (``set_cpu_channels_last(model, False)``), alternating step by step, so the layout
speed-up is a ratio measured in the same run (the machine may be shared and noisy). With
``--threads 1,2`` the thread counts alternate too: on a busy machine extra OpenMP threads
stall each other (set OMP_WAIT_POLICY=PASSIVE or use 1 thread).

    .venv/bin/python bench/model_speed.py [--batch 8] [--small-batch 64] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from psr.losses import build_loss
from psr.models import PSRNet, create_model
from psr.models.layout import set_cpu_channels_last

CONFIGS = {
    "psr (paper)": {"name": "psr", "num_classes": 8, "image_size": 96},
    "vgg16 (baseline)": {"name": "vgg16", "num_classes": 8, "image_size": 96},
    "psr small (embedded)": {
        "name": "psr",
        "num_classes": 8,
        "image_size": 64,
        "width": 0.125,
        "sr_features": 16,
        "sr_res_blocks": 2,
    },
}
SMALL = "psr small (embedded)"


def train_step(model: PSRNet, loss_fn, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one zero_grad + forward + backward."""
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    return time.perf_counter() - start


def measure(cfg: dict, batch: int, steps: int, threads: list[int]) -> dict:
    """Median step time per (layout, threads), alternating them step by step."""
    torch.manual_seed(0)
    model = create_model(**cfg).train()
    size, k = cfg["image_size"], cfg["num_classes"]
    x, y = torch.randn(batch, 3, size, size), torch.arange(batch) % k
    loss_fn = build_loss("ce", k)
    torch.set_num_threads(threads[0])
    with FlopCounterMode(display=False) as counter:
        train_step(model, loss_fn, x, y)  # also the warm-up step
    variants = [(layout, n) for n in threads for layout in ("channels_last", "nchw")]
    times: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    for step in range(steps + 1):  # the first round warms up every variant
        for layout, n in variants:
            set_cpu_channels_last(model, layout == "channels_last")
            torch.set_num_threads(n)
            seconds = train_step(model, loss_fn, x, y)
            if step:
                times[(layout, n)].append(seconds)
    return {
        "size": size,
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflop": counter.get_total_flops() / batch / 1e9,
        "img_s": {v: batch / statistics.median(t) for v, t in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="batch of the S=96 models")
    parser.add_argument("--small-batch", type=int, default=64, help="batch of the embedded one")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument(
        "--threads", default="1", help="torch CPU thread counts to alternate, e.g. 1,2"
    )
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="models to run")
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(",")]
    names = args.only or list(CONFIGS)
    results = {
        name: measure(
            CONFIGS[name], args.small_batch if name == SMALL else args.batch, args.steps, threads
        )
        for name in names
    }
    print(f"CPU fwd+bwd, median of {args.steps} alternating steps; torch {torch.__version__}")
    header = (
        f"{'model':<22}{'S':>4}{'batch':>6}{'thr':>4}{'params M':>9}{'GFLOP/img':>10}"
        f"{'img/s':>8}{'NCHW img/s':>11}{'CL speedup':>11}{'time x vgg16':>13}{'FLOP x vgg16':>13}"
    )
    print(header)
    print("-" * len(header))
    base = results.get("vgg16 (baseline)")
    for n in threads:
        for name, r in results.items():
            fast, plain = r["img_s"][("channels_last", n)], r["img_s"][("nchw", n)]
            versus = (
                f"{base['img_s'][('channels_last', n)] / fast:>13.2f}"
                f"{r['gflop'] / base['gflop']:>13.2f}"
                if base
                else ""
            )
            print(
                f"{name:<22}{r['size']:>4}{r['batch']:>6}{n:>4}{r['params']:>9.2f}"
                f"{r['gflop']:>10.2f}{fast:>8.1f}{plain:>11.1f}{fast / plain:>11.2f}{versus}"
            )
    if len(threads) > 1:
        for name, r in results.items():
            rates = {n: round(r["img_s"][("channels_last", n)], 1) for n in threads}
            print(f"{name}: channels_last img/s by threads {rates}")


if __name__ == "__main__":
    main()
