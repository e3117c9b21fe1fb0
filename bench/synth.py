"""Synthetic data generator throughput, in 48x48 images per second on one core.

    .venv/bin/python bench/synth.py [--n 3000] [--full-size] [--workers 2]

Rows: rendering alone (all face sizes, then small vs large source faces: small faces are drawn
small, so they must be cheaper), and whole `write_dataset("ferplus")` runs (CSV text included).
Ratios compare rows of the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from psr.data.synthetic import SynthConfig, generate_samples, write_dataset


def _rate(n: int, fn) -> tuple[float, float]:
    """Images per second of wall time and of this process's CPU time (robust to a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def _render(cfg: SynthConfig) -> None:
    for _ in generate_samples(cfg, "train"):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="images per row")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel rows")
    parser.add_argument("--full-size", action="store_true", help="also time the 35,887-row FER+")
    args = parser.parse_args()

    n, workers = args.n, args.workers
    base = SynthConfig(train=n, valid=0, test=0)
    small = base.model_copy(update={"face_size": (16.0, 32.0)})
    large = base.model_copy(update={"face_size": (100.0, 160.0)})
    split = SynthConfig(train=n * 8 // 10, valid=n // 10, test=n - n * 8 // 10 - n // 10)
    # (name, images, worker processes, run)
    cases = [
        ("render 48x48, faces 16-160 px", n, 1, lambda: _render(base)),
        ("render 48x48, faces 16-32 px", n, 1, lambda: _render(small)),
        ("render 48x48, faces 100-160 px", n, 1, lambda: _render(large)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ferplus"

        def write(cfg: SynthConfig, w: int) -> None:
            write_dataset("ferplus", out, cfg, progress=False, workers=w)

        cases.append(("write ferplus", n, 1, lambda: write(split, 1)))
        cases.append(("write ferplus", n, workers, lambda: write(split, workers)))
        if args.full_size:
            full = SynthConfig.full_size()
            total = full.train + full.valid + full.test
            cases.append(("write full-size ferplus", total, workers, lambda: write(full, workers)))
        rates = [_rate(count, run) for _, count, _, run in cases]

    ref = rates[0][1]
    print("cpu img/s: this process's CPU time, robust to a busy machine (- with workers)")
    head = f"{'case':<32} {'procs':>5} {'images':>7} {'wall img/s':>11} {'cpu img/s':>10}"
    print(f"{head} {'cpu x row 1':>12}")
    for (name, count, procs, _), (wall, cpu) in zip(cases, rates, strict=True):
        cpu_cols = f"{cpu:>10.0f} {cpu / ref:>12.2f}" if procs == 1 else f"{'-':>10} {'-':>12}"
        print(f"{name:<32} {procs:>5} {count:>7} {wall:>11.0f} {cpu_cols}")


if __name__ == "__main__":
    main()
