"""Stage ``evaluate``: the trained model on the test split with the paper's TTA beside the plain
pass (job :mod:`psr.jobs.evaluate`), into ``reports/evaluate/``. On the synthetic dataset
accuracy is broken down by a column of the generator's ``generation.csv``
(``evaluate.breakdown_by``, by default the face size). The report's provenance (runs, commit,
training configuration) comes from the tracking the job itself does not know.

The run carries the parameters of the train run that made the checkpoint (``model.*``,
``train.*``, tuned values included) beside its own ``evaluate.*``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import CHECKPOINT, RAW_DIR, report_dir, run_record_path
from pipeline.stages.common import stage_main
from psr.uris import redact

STAGE = "evaluate"
OUT_DIR = report_dir(STAGE)
#: The train run's parameters the report summarises (as MLflow logged them, tuned values in).
TRAINING_SUMMARY = (
    "model.name",
    "model.image_size",
    "model.width",
    "model.multiples",
    "model.pretrained",
    "train.batch_size",
    "train.phase1.epochs",
    "train.phase1.lrs",
    "train.phase2.epochs",
    "train.phase2.lrs",
    "train.loss.name",
    "train.loss.alpha",
    "train.selection",
    "train.seed",
)
#: Tags of the run that say where the process ran, not what it evaluated.
_LOCAL_TAGS = (tracking.TAG_PROCESS, "psr.workspace")
log = logging.getLogger(__name__)


def provenance(
    params: Params, run: mlflow.ActiveRun, trained: mlflow.entities.Run | None
) -> dict[str, str]:
    """What the report says the model and the evaluation are: the checkpoint (its registry
    version comes later, from ``register``), this run and ``trained``, the train run that made
    the checkpoint (:func:`pipeline.tracking.recorded_run`), the commit and the run's pipeline
    tags, and the training configuration."""
    tags = mlflow.get_run(run.info.run_id).data.tags
    rows = {
        "model": f"{CHECKPOINT} from the train stage (no registry version yet: the register "
        "stage, after this evaluation, logs it and assigns one)",
        "evaluate run": f"{run.info.run_id} ({tracking.experiment_name(params.dataset_name)})",
        "git commit": tags.get(tracking.TAG_GIT_COMMIT, "unknown (not a git repository)"),
    }
    rows |= {
        name: value
        for name, value in sorted(tags.items())
        if name.startswith("psr.") and name not in _LOCAL_TAGS
    }
    record = run_record_path("train")
    if not record.is_file():
        return rows | {"train run": f"unknown: no {record}"}
    if trained is None:
        where = redact(mlflow.get_tracking_uri())
        return rows | {"training configuration": f"train run not in {where}"}
    rows["train run"] = trained.info.run_id
    if commit := trained.data.tags.get(tracking.TAG_GIT_COMMIT):
        rows["train git commit"] = commit
    rows["training configuration"] = training_summary(trained.data.params)
    return rows


def training_summary(logged: dict[str, Any]) -> str:
    """``key=value`` of the :data:`TRAINING_SUMMARY` parameters the train run logged."""
    found = [f"{key}={logged[key]}" for key in TRAINING_SUMMARY if key in logged]
    return ", ".join(found) or "the train run logged none of the summarised parameters"


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.data.synthetic import GENERATION_FILE
    from psr.jobs import evaluate

    cfg = params.evaluate
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"evaluate": cfg.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=read_manifest(params.prepared_dir),
    ) as active:
        # the model's training parameters beside its test metrics: one view compares them
        trained = tracking.recorded_run("train")  # read once: its params and the provenance
        if trained is not None:
            tracking.copy_params(trained)
            mlflow.set_tag("psr.run.train", trained.info.run_id)
        sidecar = RAW_DIR / GENERATION_FILE if params.breakdown_sidecar else None
        result = evaluate.run(
            cfg,
            CHECKPOINT,
            params.prepared_dir,
            OUT_DIR,
            sidecar=sidecar,
            provenance=provenance(params, active, trained),
        )
        mlflow.log_metrics(result.logged_metrics())
        mlflow.log_artifacts(str(OUT_DIR), artifact_path="evaluation")
        name, headline = result.headline
        log.info("%s accuracy %.4f (%s)", cfg.split, headline.metrics["accuracy"], name)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
