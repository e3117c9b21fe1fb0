"""params.yaml's ``distributed`` section and the torchrun launch it makes (pipeline/launch.py);
the launch itself runs in test_distributed_train.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pipeline.launch import check_devices, check_world, torchrun_argv
from pipeline.params import DistributedParams, load_params, parse_params

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _params_with(**distributed) -> dict:
    data = yaml.safe_load(PARAMS.read_text())
    data["distributed"] = {**data["distributed"], **distributed}
    return data


def test_the_default_is_one_process():
    dist = load_params(PARAMS).distributed
    assert (dist.nproc_per_node, dist.nnodes, dist.rdzv_endpoint) == (1, 1, None)
    assert dist.world_size == 1


@pytest.mark.parametrize(
    ("distributed", "message"),
    [
        ({"nproc_per_node": 0}, "distributed.nproc_per_node: Input should be greater than"),
        ({"nnodes": 2}, "distributed: Value error, nnodes is 2: set rdzv_endpoint"),
        ({"rdzv_endpoint": "node0"}, "distributed.rdzv_endpoint: Value error, expected host:port"),
        ({"rdzv_endpoint": "node0:99999"}, "distributed.rdzv_endpoint: Value error, expected"),
        ({"rdzv_endpoint": ":29400"}, "distributed.rdzv_endpoint: Value error, expected"),
        ({"rdzv_id": "x"}, "distributed.rdzv_id: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_name_the_field(distributed, message):
    with pytest.raises(ValueError, match="invalid parameters") as err:
        parse_params(_params_with(**distributed), "params.yaml")
    assert f"params.yaml: {message}" in str(err.value)


def test_one_machine_is_a_standalone_launch_of_the_module():
    argv = torchrun_argv(DistributedParams(nproc_per_node=2), "pipeline.stages.train")
    assert argv == [
        "--nproc_per_node=2",
        "--nnodes=1",
        "--standalone",
        "--max_restarts=0",
        "--module",
        "pipeline.stages.train",
    ]


def test_several_machines_meet_at_node_0_with_a_fixed_rank_each():
    dist = DistributedParams(nproc_per_node=4, nnodes=2, rdzv_endpoint="node0:29400")
    argv = torchrun_argv(dist, "pipeline.stages.train", node_rank=1)
    assert argv[:5] == [
        "--nproc_per_node=4",
        "--nnodes=2",
        "--rdzv_backend=static",
        "--rdzv_endpoint=node0:29400",
        "--node_rank=1",
    ]
    with pytest.raises(ValueError, match=r"--node-rank 2: .*nnodes is 2, so node ranks are 0..1"):
        torchrun_argv(dist, "pipeline.stages.train", node_rank=2)


def test_gpu_processes_need_a_gpu_each(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_devices(DistributedParams(nproc_per_node=1), "cuda")
    with pytest.raises(ValueError, match=r"distributed.nproc_per_node is 2 .* has 1 GPU"):
        check_devices(DistributedParams(nproc_per_node=2), "auto")
    check_devices(DistributedParams(nproc_per_node=8), "cpu")  # gloo: any number


def test_cuda_without_cuda_names_train_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^params.yaml: train.device: device='cuda' but"):
        check_devices(DistributedParams(nproc_per_node=2), "cuda")


def test_a_worker_of_another_world_size_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    check_world(DistributedParams(nproc_per_node=2, nnodes=2, rdzv_endpoint="h:1"))
    with pytest.raises(ValueError, match=r"WORLD_SIZE=4 but .* gives 2 x 1 = 2 processes"):
        check_world(DistributedParams(nproc_per_node=2))


def test_a_state_of_two_processes_is_not_continued_by_one(monkeypatch):
    """The world size is part of a training's identity (psr/jobs/train.py), so resume="auto"
    starts fresh across world sizes and says why."""
    from psr.engine.config import TrainConfig
    from psr.engine.loop import _resume_conflict
    from psr.jobs.train import _world

    assert _world() == {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    two = {"data": "d"} | _world()
    assert two == {"data": "d", "world_size": "2"}
    state = {"config": TrainConfig().model_dump(mode="json"), "identity": two}
    assert _resume_conflict(state, TrainConfig(), {"data": "d"}) == (
        "it was trained on other world_size"
    )
