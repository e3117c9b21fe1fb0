"""The train stage under torchrun (params.yaml's ``distributed``): two gloo processes on the CPU
in the tiny workspace of ``conftest.py``, against ``psr train`` under ``torchrun`` with the
same configuration on the same prepared data; and an interrupted distributed run resumed."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Trained:
    """What one finished two-process train stage left behind."""

    history: list[dict[str, str]]
    metrics: dict
    weights: dict[str, dict[str, torch.Tensor]]  # best.pt, last.pt


def _trained(root: Path) -> Trained:
    return Trained(
        history=_history(root / "reports/train/history.csv"),
        metrics=json.loads((root / "reports/train/metrics.json").read_text()),
        weights={n: _tensors(root / "models/psr" / n) for n in ("best.pt", "last.pt")},
    )


@pytest.fixture(scope="module")
def two_processes(workspace, stage_env):
    """The workspace's params.yaml with ``distributed.nproc_per_node: 2``, and the train stage
    run once with it (its MLflow runs before and after)."""
    from pipeline.params import set_params

    set_params(workspace / "params.yaml", ["distributed.nproc_per_node=2"])
    runs_before = {r.info.run_id for r in _train_runs(workspace)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train"],
        cwd=workspace,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _ok(done)
    new_runs = [r for r in _train_runs(workspace) if r.info.run_id not in runs_before]
    return workspace, _trained(workspace), new_runs


def test_two_process_stage_matches_psr_train_under_torchrun(two_processes, stage_env):
    """The same computation: equal history (timings aside), metrics and bit-identical weights;
    one MLflow run, logged by rank 0."""
    root, trained, new_runs = two_processes
    assert len(trained.history) == 2  # tiny: 1 + 1 epochs

    # psr train under torchrun with the configuration the stage resolved
    from pipeline.params import load_params
    from pipeline.resolve import for_training

    with contextlib.chdir(root):
        params, _ = for_training(load_params())
    cli_dir = root / "cli"
    cli_dir.mkdir()
    (cli_dir / "train.yaml").write_text(yaml.safe_dump(params.train.model_dump(mode="json")))
    (cli_dir / "model.yaml").write_text(yaml.safe_dump(params.model.model_dump(mode="json")))
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

    assert trained.history == _history(cli_dir / "run/history.csv")
    assert trained.metrics == json.loads((cli_dir / "run/metrics.json").read_text())
    for name, weights in trained.weights.items():
        assert _same(weights, _tensors(cli_dir / "run" / name)), name

    assert len(new_runs) == 1 and new_runs[0].info.status == "FINISHED"
    assert new_runs[0].data.params["distributed.nproc_per_node"] == "2"
    assert new_runs[0].data.metrics["best_valid_acc"] == trained.metrics["best_valid_acc"]


def test_two_machines_match_one_machine_of_two_processes(two_processes, stage, stage_env):
    """docs/pipeline.md's multi-node commands, both nodes on this machine: node 0 is the stage,
    node 1 ``python -m pipeline.stages.train --node-rank 1`` in the same checkout. Ranks 0 and
    1 of a world of 2 as on one machine: the same bytes."""
    from pipeline.params import set_params

    root, trained, _ = two_processes
    params = root / "params.yaml"
    with socket.socket() as probe:  # a free port for node 0's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    two_nodes = ["distributed.nproc_per_node=1", "distributed.nnodes=2"]
    set_params(params, [*two_nodes, f"distributed.rdzv_endpoint=127.0.0.1:{port}"])
    try:
        node1 = subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.train", "--node-rank", "1"],
            cwd=root,
            env=stage_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        node0 = stage("train")
        node1_output = node1.communicate(timeout=600)[0]
    finally:
        set_params(params, ["distributed.nproc_per_node=2", "distributed.nnodes=1"])
        set_params(params, ["distributed.rdzv_endpoint=null"])
    _ok(node0)
    assert node1.returncode == 0, node1_output[-4000:]
    again = _trained(root)
    assert again.history == trained.history and again.metrics == trained.metrics
    for name, weights in trained.weights.items():
        assert _same(weights, again.weights[name]), name


def test_interrupted_two_process_stage_resumes(two_processes, stage):
    """Rank 0 killed right after saving epoch 1: the stage fails naming the worker, and the
    rerun continues that epoch with two processes and publishes."""
    root, trained, _ = two_processes
    killed = stage("train", failpoint="train.epoch_saved")
    assert killed.returncode == KILLED_EXIT, killed.stderr[-4000:]
    assert killed.stderr.strip().splitlines()[-1] == (
        "stage train: error: torchrun worker of rank 0 failed (killed by SIGKILL)"
    )
    last = torch.load(root / "models/resume/train/last.pt", weights_only=False)
    assert last["identity"]["world_size"] == "2"

    resumed = _ok(stage("train"))
    assert "resuming models/resume/train/last.pt after epoch 1" in resumed.stderr
    again = _history(root / "reports/train/history.csv")
    assert len(again) == 2
    assert again[0] == trained.history[0]  # epoch 1: the killed run's, as saved
    assert not (root / "models/resume/train").exists()


def test_node_rank_outside_the_nodes_is_refused(workspace, stage):
    refused = stage("train", "--node-rank", "1")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "stage train: error: --node-rank 1: params.yaml's distributed.nnodes is 1, so node "
        "ranks are 0..0"
    )
