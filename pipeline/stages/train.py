"""Stage ``train``: the PSR model on the prepared dataset (job :mod:`psr.jobs.train`).

Trains ``params.yaml``'s ``model`` and ``train`` sections with the SR network of the sr_pretrain
stage (unless ``model.sr_weights`` names a file) and the tune stage's best values written over
them (``reports/tune/best_params.json``; empty when tuning is disabled). Writes
``models/psr/best.pt`` and ``last.pt``, and ``reports/train/`` (history.csv, metrics.json).

Resumable: the training runs in ``models/resume/train/``, which an interrupted run leaves
behind; the next run continues its ``last.pt`` when it is a state of the same configuration
(and says why it starts fresh otherwise), so a killed stage ends bit-identical to one that
was not. The outputs are published only once training and logging are done.

Distributed (params.yaml's ``distributed``, :mod:`pipeline.launch`): with more than one process
this process launches torchrun, whose workers run this module again; rank 0 does all of the
above (one MLflow run), the other ranks train only. ``--node-rank K`` joins node 0's launch
from another machine.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import mlflow

from pipeline import launch, tracking
from pipeline.params import Params
from pipeline.paths import MODEL_DIR, PRIORS_FILE, report_dir, resume_dir, run_record_path
from pipeline.resolve import for_training
from pipeline.stages.common import stage_main

STAGE = "train"
MODULE = f"pipeline.stages.{STAGE}"  # what every torchrun worker runs
log = logging.getLogger(__name__)


def run(params: Params, node_rank: int = 0) -> None:
    from psr.data.prepared import read_manifest
    from psr.engine.distributed import is_main_process, launched_by_torchrun
    from psr.jobs.history import HISTORY_FILE

    manifest = read_manifest(params.prepared_dir)
    params, tuned = for_training(params)
    if launched_by_torchrun():
        launch.check_world(params.distributed)
    elif params.distributed.world_size > 1 or node_rank:
        launch.check_devices(params.distributed, params.train.device)
        launch.launch(params.distributed, MODULE, f"stage {STAGE}", node_rank)
        return
    if not is_main_process():
        logging.getLogger().setLevel(logging.WARNING)
        _train(params, [])
        return
    epochs = tracking.EpochLogger()
    logged = {
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "distributed": params.distributed.model_dump(mode="json"),
    }
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params=logged,
        record=run_record_path(STAGE),
        manifest=manifest,
        tags={"psr.tuned": ",".join(sorted(tuned)) or "none"},
    ):
        result = _train(params, [epochs])
        epochs.log_missing(result.fit.history)
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()})
        mlflow.log_artifact(str(report_dir(STAGE) / HISTORY_FILE))
        mlflow.log_dict(logged, "resolved_params.json")
        log.info(
            "best valid accuracy %.4f at epoch %d",
            result.fit.best_metric,
            result.fit.best_epoch,
        )
    publish(resume_dir(STAGE), MODEL_DIR)


def _train(params: Params, callbacks: list) -> Any:
    """The training every rank runs (rank 0 writes the files and calls the callbacks)."""
    from psr.jobs import train

    return train.run(
        params.model,
        params.train,
        params.prepared_dir,
        resume_dir(STAGE),
        prior=PRIORS_FILE,
        reports=report_dir(STAGE),
        callbacks=callbacks,
        resume="auto",
    )


def publish(work: Path, target: Path) -> None:
    """Copy the finished training's checkpoints from ``work`` into ``target`` (all or nothing),
    then drop ``work``: from here on a rerun trains afresh."""
    from psr.engine.outputs import BEST, LAST
    from psr.fileio import atomic_directory

    with atomic_directory(target, marker=BEST) as tmp:
        for name in (BEST, LAST):
            shutil.copy2(work / name, tmp / name)
    (work / LAST).unlink()  # first: a kill after it leaves nothing that would be resumed
    shutil.rmtree(work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="the DVC train stage (dvc.yaml runs it without arguments)",
    )
    parser.add_argument(
        "--node-rank",
        type=int,
        default=0,
        help="this machine's rank when distributed.nnodes > 1 (0: the machine of dvc repro)",
    )
    args = parser.parse_args(argv)
    return stage_main(STAGE, lambda params: run(params, args.node_rank))()


if __name__ == "__main__":
    sys.exit(main())
