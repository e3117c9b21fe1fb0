"""Where the paper PSR's CPU training time goes: forward + backward of each block on its own, at
the shapes it sees inside the model, with its FLOPs, so each block's GFLOP/s shows which one runs
below the rest. The single-scale vgg16 is one full-size low part + the high part + the head.

    .venv/bin/python bench/psr_blocks.py [--batch 8] [--steps 3] [--threads 1,2] [--layout cl,nchw]

Blocks, times used per PSR step: STN (1), low part at S/2 (1), EDSR S/2 -> S (1), low part at S
(2), high part on the S/2 branch's features (1) and on the S branches' (2); the head (two small
Linear layers) is left out. Steps
alternate between variants (threads, layout), so ratios come from one run on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from psr.models import create_model
from psr.models.layout import set_cpu_channels_last

S = 96


def blocks(model: nn.Module, batch: int) -> dict[str, tuple[nn.Module, torch.Size, int]]:
    """name -> (module, input shape, uses per PSR training step)."""
    low, high = model.low[0], model.high
    with torch.no_grad():
        small = low(torch.zeros(1, 3, S // 2, S // 2)).shape[1:]
        full = low(torch.zeros(1, 3, S, S)).shape[1:]
    return {
        "stn": (model.stn, (batch, 3, S, S), 1),
        "low @48": (low, (batch, 3, S // 2, S // 2), 1),
        "edsr 48->96": (model.sr, (batch, 3, S // 2, S // 2), 1),
        "low @96": (low, (batch, 3, S, S), 2),
        f"high @{small[-1]}": (high, (batch, *small), 1),
        f"high @{full[-1]}": (high, (batch, *full), 2),
    }


def step_time(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn().float().square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--layout", default="cl,nchw", help="cl (channels_last) and/or nchw")
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(",")]
    layouts = args.layout.split(",")
    torch.manual_seed(0)
    model = create_model("psr", num_classes=8, image_size=S).train()
    table = blocks(model, args.batch)
    inputs = {name: torch.randn(shape) for name, (_, shape, _) in table.items()}
    flops = {}
    for name, (module, _, _) in table.items():
        with FlopCounterMode(display=False) as counter:
            step_time(lambda m=module, x=inputs[name]: m(x))
        flops[name] = counter.get_total_flops() / args.batch / 1e9
    variants = [(n, layout) for n in threads for layout in layouts]
    times: dict[tuple[str, int, str], list[float]] = {}
    for step in range(args.steps + 1):  # the first round warms up
        for n, layout in variants:
            torch.set_num_threads(n)
            set_cpu_channels_last(model, layout == "cl")
            for name, (module, _, _) in table.items():
                x = inputs[name]
                x = x.contiguous(memory_format=torch.channels_last) if layout == "cl" else x
                model.zero_grad(set_to_none=True)
                seconds = step_time(lambda m=module, x=x: m(x))
                if step:
                    times.setdefault((name, n, layout), []).append(seconds)
    print(f"PSR (paper, S={S}) blocks, batch {args.batch}, median of {args.steps}; torch "
          f"{torch.__version__}")  # fmt: skip
    header = f"{'block':<14}{'uses':>5}{'GFLOP/img':>10}" + "".join(
        f"{f'{n}thr {layout} ms':>15}{'GFLOP/s':>9}" for n, layout in variants
    )
    print(header)
    print("-" * len(header))
    totals = {v: 0.0 for v in variants}
    for name, (_, _, uses) in table.items():
        row = f"{name:<14}{uses:>5}{flops[name]:>10.2f}"
        for n, layout in variants:
            seconds = statistics.median(times[(name, n, layout)])
            totals[(n, layout)] += uses * seconds
            row += f"{seconds * 1e3:>15.0f}{flops[name] * args.batch / seconds:>9.1f}"
        print(row)
    print(
        "sum x uses    " + " " * 15 + "".join(f"{totals[v] * 1e3:>15.0f}{'':>9}" for v in variants)
    )


if __name__ == "__main__":
    main()
