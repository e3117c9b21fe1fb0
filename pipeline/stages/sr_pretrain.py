"""Stage ``sr_pretrain``: the x2 SR network pre-trained on the training faces
(job :mod:`psr.jobs.sr_pretrain`). The architecture and resolution come from ``model``, so the
weights load into ``model.sr``; the train stage finds them through ``models/sr/sr.json``."""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import SR_DIR, report_dir, run_record_path
from pipeline.stages.common import stage_main

STAGE = "sr_pretrain"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.jobs import sr_pretrain
    from psr.jobs.history import METRICS_FILE

    cfg, model = params.sr_pretrain, params.model
    logged = {"sr_pretrain": cfg.model_dump(mode="json")}
    logged["model"] = {k: getattr(model, k) for k in ("sr", "sr_features", "sr_res_blocks")}
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params=logged,
        record=run_record_path(STAGE),
        manifest=read_manifest(params.prepared_dir),
    ):
        result = sr_pretrain.run(
            cfg,
            model,
            params.prepared_dir,
            SR_DIR,
            reports=report_dir(STAGE),
            callbacks=[tracking.EpochLogger()],
        )
        if result.weights is None:
            mlflow.set_tag("psr.sr_pretrain", result.reason)
            return
        mlflow.log_artifact(str(report_dir(STAGE) / METRICS_FILE))
        mlflow.log_artifact(str(result.weights))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
