"""The train stage under torchrun (params.yaml's ``distributed``): two gloo processes on the CPU
in the tiny workspace of ``conftest.py``, against ``psr train`` under ``torchrun`` with the
same configuration on the same prepared data; and an interrupted distributed run resumed."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS = {"images_per_s", "epoch_seconds"}  # wall-clock: differ between any two runs
KILLED_EXIT = 128 + 9  # the launcher's status for a worker killed by SIGKILL


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state.get("state_dict", state.get("model", state))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_runs(root: Path) -> list:
    import mlflow

    from pipeline import tracking

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.experiment_name("tiny"))
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tracking.TAG_STAGE}` = 'train'"
    )


@pytest.fixture(scope="module")
def two_processes(workspace):
    """The workspace's params.yaml with ``distributed.nproc_per_node: 2``."""
    from pipeline.params import set_params

    set_params(workspace / "params.yaml", ["distributed.nproc_per_node=2"])
    return workspace


def test_two_process_stage_matches_psr_train_under_torchrun(two_processes, stage, stage_env):
    """The same computation: equal history (timings aside), metrics and bit-identical weights;
    one MLflow run, logged by rank 0."""
    root = two_processes
    runs_before = {r.info.run_id for r in _train_runs(root)}
    done = _ok(stage("train"))
    assert "torchrun worker" not in done.stderr

    # psr train under torchrun with the configuration the stage resolved
    from pipeline.params import load_params
    from pipeline.resolve import for_training

    with contextlib.chdir(root):
        params, _ = for_training(load_params())
    (root / "cli").mkdir()
    (root / "cli/train.yaml").write_text(yaml.safe_dump(params.train.model_dump(mode="json")))
    (root / "cli/model.yaml").write_text(yaml.safe_dump(params.model.model_dump(mode="json")))
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "psr.cli", "train", "--data", "data/prepared/tiny", "--out", "cli/run"),
        *("--config", "cli/train.yaml", "--model-config", "cli/model.yaml"),
        *("--prior", "data/priors/priors.json"),
    ]
    cli = subprocess.run(
        command, cwd=root, env=stage_env(), capture_output=True, text=True, timeout=600
    )
    _ok(cli)

    stage_history = _history(root / "reports/train/history.csv")
    assert len(stage_history) == 2  # tiny: 1 + 1 epochs
    assert stage_history == _history(root / "cli/run/history.csv")
    stage_metrics = json.loads((root / "reports/train/metrics.json").read_text())
    assert stage_metrics == json.loads((root / "cli/run/metrics.json").read_text())
    for name in ("best.pt", "last.pt"):
        assert _same(_tensors(root / "models/psr" / name), _tensors(root / "cli/run" / name)), name

    new = [r for r in _train_runs(root) if r.info.run_id not in runs_before]
    assert len(new) == 1 and new[0].info.status == "FINISHED"
    assert new[0].data.params["distributed.nproc_per_node"] == "2"
    assert new[0].data.metrics["best_valid_acc"] == stage_metrics["best_valid_acc"]


def test_interrupted_two_process_stage_resumes(two_processes, stage):
    """rank 0 killed right after saving epoch 1: the stage fails naming the worker, the rerun
    continues that epoch with two processes and publishes."""
    root = two_processes
    _ok(stage("train"))
    uninterrupted = _history(root / "reports/train/history.csv")

    killed = stage("train", failpoint="train.epoch_saved")
    assert killed.returncode == KILLED_EXIT, killed.stderr[-4000:]
    assert "stage train: error: torchrun worker of rank 0 failed (killed by SIGKILL)" in (
        killed.stderr
    )
    last = torch.load(root / "models/resume/train/last.pt", weights_only=False)
    assert last["identity"]["world_size"] == "2"

    resumed = _ok(stage("train"))
    assert "resuming models/resume/train/last.pt after epoch 1" in resumed.stderr
    again = _history(root / "reports/train/history.csv")
    assert len(again) == 2
    assert again[0] == uninterrupted[0]  # epoch 1 is the killed run's, as saved
    assert not (root / "models/resume/train").exists()


def test_a_single_process_state_is_not_continued_by_two(two_processes, stage):
    """A ``last.pt`` of one process: two processes start fresh and say why."""
    from pipeline.params import set_params

    root = two_processes
    params = root / "params.yaml"
    set_params(params, ["distributed.nproc_per_node=1"])
    try:
        killed = stage("train", failpoint="train.epoch_saved")
        assert killed.returncode != 0
        set_params(params, ["distributed.nproc_per_node=2"])
        fresh = _ok(stage("train"))
    finally:
        set_params(params, ["distributed.nproc_per_node=2"])
    assert "not resuming models/resume/train/last.pt" in fresh.stderr
    assert "other world_size" in fresh.stderr


def test_too_many_gpu_processes_are_refused_naming_the_field(two_processes, stage):
    from pipeline.params import set_params

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the two GPUs")
    params = two_processes / "params.yaml"
    set_params(params, ["train.device=cuda"])
    try:
        refused = stage("train")
    finally:
        set_params(params, ["train.device=auto"])
    assert refused.returncode == 2, refused.stderr[-4000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("stage train: error: params.yaml: ")
    assert "train.device" in last


def test_node_rank_outside_the_nodes_is_refused(two_processes, stage):
    refused = stage("train", "--node-rank", "1")
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last == (
        "stage train: error: --node-rank 1: params.yaml's distributed.nnodes is 1, so node "
        "ranks are 0..0"
    )
