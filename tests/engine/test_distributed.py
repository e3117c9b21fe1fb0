import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")
TIMINGS = {"images_per_s", "epoch_seconds"}  # differ between ranks


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key

    # metrics are reduced over ranks: both report the same numbers (timing aside)
    def numbers(history):
        return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]

    assert numbers(rank0["history"]) == numbers(rank1["history"])
    assert len(rank0["history"]) == 3
    # the 25 validation images are sharded 13 + 12 and every one is counted once
    assert all(
        abs(h["valid_acc"] * 25 - round(h["valid_acc"] * 25)) < 1e-9 for h in rank0["history"]
    )
    # rank 0 alone wrote the checkpoints, with the final weights
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(torch.equal(v, last["model"][k]) for k, v in rank0["state"].items())
    assert (tmp_path / "run" / "best.pt").is_file()
