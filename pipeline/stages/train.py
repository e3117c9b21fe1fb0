"""Stage ``train``: the PSR model on the prepared dataset (job :mod:`psr.jobs.train`).

Trains ``params.yaml``'s ``model`` and ``train`` sections with the SR network of the sr_pretrain
stage (unless ``model.sr_weights`` names a file) and the tune stage's best values written over
them (``reports/tune/best_params.json``; empty when tuning is disabled). Writes
``models/psr/best.pt`` and ``last.pt``, and ``reports/train/`` (history.csv, metrics.json).

Resumable: the training runs in ``models/resume/train/``, which an interrupted run leaves
behind; the next run continues its ``last.pt`` when it is a state of the same configuration
(and says why it starts fresh otherwise), so a killed stage ends bit-identical to one that
was not. The outputs are published only once training and logging are done.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import MODEL_DIR, PRIORS_FILE, report_dir, resume_dir, run_record_path
from pipeline.resolve import for_training
from pipeline.stages.common import stage_main

STAGE = "train"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.jobs import train
    from psr.jobs.history import HISTORY_FILE

    manifest = read_manifest(params.prepared_dir)
    params, tuned = for_training(params)
    work = resume_dir(STAGE)
    epochs = tracking.EpochLogger()
    logged = {
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
    }
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params=logged,
        record=run_record_path(STAGE),
        manifest=manifest,
        tags={"psr.tuned": ",".join(sorted(tuned)) or "none"},
    ):
        result = train.run(
            params.model,
            params.train,
            params.prepared_dir,
            work,
            prior=PRIORS_FILE,
            reports=report_dir(STAGE),
            callbacks=[epochs],
            resume="auto",
        )
        epochs.log_missing(result.fit.history)
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()})
        mlflow.log_artifact(str(report_dir(STAGE) / HISTORY_FILE))
        mlflow.log_dict(logged, "resolved_params.json")
        log.info(
            "best valid accuracy %.4f at epoch %d",
            result.fit.best_metric,
            result.fit.best_epoch,
        )
    publish(work, MODEL_DIR)


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


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
