"""Run by test_distributed.py under ``torchrun --nproc_per_node 2``: every rank trains the tiny
stand-in with DDP (gloo on CPU) and saves its final weights as ``<out>/rank<r>.pt``."""

import os
import sys
from pathlib import Path

import torch
from conftest import MODEL_CONFIG, make_split, tiny_config, tiny_model

from psr.engine import fit


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model = tiny_model(seed=rank)  # different initial weights: DDP must broadcast rank 0's
    cfg = tiny_config(epochs1=2, epochs2=1, workers=int(os.environ.get("WORKERS", "0")))
    result = fit(
        model, make_split(48), make_split(25, seed=1), cfg, out / "run", model_config=MODEL_CONFIG
    )
    torch.save({"state": model.state_dict(), "history": result.history}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
