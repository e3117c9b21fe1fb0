"""Start-up time of the stages and the ``psr`` command: seconds to import each, as a multiple of
``import torch`` timed in the same run, and which slow packages each one loads.

    .venv/bin/python bench/startup.py [--repeats 3] [--modules pipeline.stages.train ...]

Every stage is a process of its own under DVC and Prefect, so its imports are paid once per
stage and per test that runs one: a pipeline run of ten stages pays them ten times. Each module
is imported ``--repeats`` times in a fresh interpreter (the best time is kept: the machine is
shared). ``torch._dynamo`` comes with torchvision and the ONNX exporter; matplotlib only with a
report that draws.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

STAGES = [
    f"pipeline.stages.{name}"
    for name in (
        "validate", "download", "prepare", "priors", "sr_pretrain", "tune", "train", "evaluate",
        "register", "ablate",
    )
]  # fmt: skip
#: Packages whose presence after the import is shown (each costs about a second or more).
HEAVY = ("torch", "torch._dynamo", "torchvision", "mlflow", "albumentations", "matplotlib")


def import_once(module: str) -> tuple[float, list[str]]:
    """Seconds for ``python -c "import <module>"`` (the interpreter's own start included, as
    for a stage) and the packages of :data:`HEAVY` it loaded."""
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modules", nargs="+", default=["psr.cli", *STAGES])
    args = parser.parse_args()
    best = {}
    for module in ["torch", *args.modules]:
        runs = [import_once(module) for _ in range(args.repeats)]
        best[module] = (min(seconds for seconds, _ in runs), runs[0][1])
    torch_s = best["torch"][0]
    print(f"python -c 'import torch': {torch_s:.2f} s (best of {args.repeats}); ratios to it")
    print("| module | x import torch | loads |")
    print("|---|---|---|")
    for module in args.modules:
        seconds, loaded = best[module]
        print(f"| `{module}` | {seconds / torch_s:.2f} | {', '.join(loaded) or '-'} |")


if __name__ == "__main__":
    main()
