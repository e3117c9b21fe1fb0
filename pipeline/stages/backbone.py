"""Stage ``backbone``: the official RAF-DB starting point, a vgg16 trained on FER+ at several
input sizes (job :mod:`psr.jobs.backbone`).

Off by default (``backbone.enabled``); the RAF-DB recipe turns it on. It prepares FER+ from
``backbone.source`` and ``backbone.votes`` into ``data/backbone``, trains the ``vgg16`` member
(``model``'s width, split point and starting weights) through ``backbone.steps`` and writes
``models/backbone/best.pt``; ``models/backbone/backbone.json`` tells the tune and train stages
whether to start from it (:func:`pipeline.resolve.with_pretrained_weights`). Resumable like the
train stage: the steps run in ``models/resume/backbone/``.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import (
    BACKBONE_DATA,
    BACKBONE_DIR,
    BACKBONE_INFO_FILE,
    report_dir,
    resume_dir,
    run_record_path,
)
from pipeline.stages.common import stage_main

STAGE = "backbone"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    cfg = params.backbone
    logged = {"backbone": cfg.model_dump(mode="json")}
    with tracking.stage_run(
        STAGE, params.dataset_name, params=logged, record=run_record_path(STAGE)
    ):
        if cfg.enabled:
            info = train_backbone(params)
        else:
            mlflow.set_tag("psr.backbone", "disabled")
            info = {"checkpoint": None, "reason": "disabled"}
            _publish(None, info, {})
    log.info("backbone: %s", info.get("checkpoint") or info.get("reason"))


def train_backbone(params: Params) -> dict:
    """Prepare FER+, train the steps, publish the checkpoint; returns backbone.json's content."""
    from psr.jobs import backbone, prepare
    from psr.models import ModelConfig

    cfg = params.backbone
    model = ModelConfig(
        name="vgg16",
        num_classes=8,
        width=params.model.width,
        sep_pos=params.model.sep_pos,
        pretrained=params.model.pretrained,
    )
    mlflow.log_dict(model.model_dump(mode="json"), "backbone_model.json")
    prepared = prepare.run(
        prepare.PrepareConfig(
            dataset="ferplus",
            source=cfg.source,
            votes=cfg.votes,
            vote_mode=cfg.vote_mode,
            name="ferplus",
            workers=params.prepare.workers,
            progress=cfg.train.progress,
        ),
        BACKBONE_DATA,
    )
    mlflow.set_tags(tracking.run_tags(params.dataset_name, prepared.manifest))  # its FER+
    result = backbone.run(
        cfg,
        model,
        prepared.root,
        resume_dir(STAGE),
        callbacks_for_step=lambda i: [tracking.EpochLogger(prefix=f"step{i}_")],
    )
    for step in result.steps:
        i = step["step"]
        mlflow.log_metrics({f"step{i}_{k}": float(v) for k, v in step.items() if k != "step"})
    info = {"checkpoint": str(BACKBONE_DIR / backbone.BEST), "steps": len(result.steps)}
    _publish(result.checkpoint, info, {"steps": result.steps})
    shutil.rmtree(resume_dir(STAGE))
    return info


def _publish(checkpoint: Path | None, info: dict, metrics: dict) -> None:
    """models/backbone (all or nothing) and reports/backbone/metrics.json; data/backbone exists
    (a DVC output) even when the stage is off."""
    from psr.fileio import atomic_directory, write_json
    from psr.jobs.backbone import BEST

    BACKBONE_DATA.mkdir(parents=True, exist_ok=True)
    report_dir(STAGE).mkdir(parents=True, exist_ok=True)
    with atomic_directory(BACKBONE_DIR, marker=BACKBONE_INFO_FILE.name) as tmp:
        if checkpoint is not None:
            shutil.copy2(checkpoint, tmp / BEST)
        write_json(tmp / BACKBONE_INFO_FILE.name, info)
    write_json(report_dir(STAGE) / "metrics.json", metrics)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
