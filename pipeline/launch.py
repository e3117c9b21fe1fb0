"""The train stage under ``torchrun``: params.yaml's ``distributed`` section -> the launch.

With ``nproc_per_node * nnodes > 1`` the stage process (``dvc repro``'s ``python -m
pipeline.stages.train``) becomes torchrun's agent, in-process: it starts ``nproc_per_node``
workers, each ``python -m pipeline.stages.train`` again with torchrun's ``RANK`` and
``WORLD_SIZE``, and waits for them. Rank 0 is the stage as in one process (the MLflow run,
reports, publishing the checkpoints); the other ranks only train (:mod:`psr.engine.distributed`).

On several machines every node runs an agent with torchrun's static rendezvous: node 0, the
machine of ``dvc repro``, hosts it at ``rdzv_endpoint`` and its first worker is rank 0; node K
runs ``python -m pipeline.stages.train --node-rank K`` in its own checkout.
"""

from __future__ import annotations

import os
import sys

from pipeline.params import DistributedParams


def torchrun_argv(dist: DistributedParams, module: str, node_rank: int = 0) -> list[str]:
    """torchrun's command line (without ``torchrun``) that runs ``python -m module`` on every
    rank of this node."""
    if not 0 <= node_rank < dist.nnodes:
        raise ValueError(
            f"--node-rank {node_rank}: params.yaml's distributed.nnodes is {dist.nnodes}, so node "
            f"ranks are 0..{dist.nnodes - 1}"
        )
    argv = [f"--nproc_per_node={dist.nproc_per_node}", f"--nnodes={dist.nnodes}"]
    if dist.nnodes == 1:
        argv.append("--standalone")  # a free port on localhost
    else:
        argv += [
            "--rdzv_backend=static",
            f"--rdzv_endpoint={dist.rdzv_endpoint}",
            f"--node_rank={node_rank}",
        ]
    return [*argv, "--max_restarts=0", "--module", module]


def check_devices(dist: DistributedParams, device_name: str) -> None:
    """On CUDA every process of a node takes the GPU of its local rank: there must be enough."""
    import torch

    from psr.device import resolve_device

    try:
        device = resolve_device(device_name)
    except ValueError as err:
        raise ValueError(f"params.yaml: train.device: {err}") from None
    found = torch.cuda.device_count() if device.type == "cuda" else None
    if found is not None and found < dist.nproc_per_node:
        raise ValueError(
            f"params.yaml: distributed.nproc_per_node is {dist.nproc_per_node} but train.device "
            f"{device_name!r} trains on CUDA and this machine has {found} GPU(s) (one process "
            "per GPU): lower distributed.nproc_per_node, or set train.device: cpu"
        )


def check_world(dist: DistributedParams) -> None:
    """A worker must belong to the launch params.yaml describes (not a hand-started torchrun
    of another size): the world size decides the results DVC records."""
    world = int(os.environ["WORLD_SIZE"])
    if world != dist.world_size:
        raise ValueError(
            f"launched by torchrun with WORLD_SIZE={world} but params.yaml's distributed "
            f"section gives {dist.nproc_per_node} x {dist.nnodes} = {dist.world_size} processes"
        )


def launch(dist: DistributedParams, module: str, label: str, node_rank: int = 0) -> None:
    """Run torchrun's agent here until every worker of this node has ended. A failed worker
    ends this process too, with its exit status (a signal ``N``: ``128 + N``), after one line
    naming it (the worker's own error is above)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(torchrun_argv(dist, module, node_rank))
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode < 0:
            why, code = f"killed by {failure.signal_name()}", 128 - failure.exitcode
        else:
            why, code = f"exit status {failure.exitcode}", failure.exitcode
        print(f"{label}: error: torchrun worker of rank {rank} failed ({why})", file=sys.stderr)
        raise SystemExit(code) from None
