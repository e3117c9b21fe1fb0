"""Stage ``ablate``: one arm of the paper's ablation with one seed (:mod:`pipeline.ablation`).

    python -m pipeline.stages.ablate <arm> <seed>

Trains the arm with the train job and evaluates its best checkpoint with the evaluate job (the
``evaluate`` section of params.yaml, so the synthetic data's accuracy by face size comes too),
into ``reports/ablation/runs/<arm>-seed<seed>/``: ``metrics.json`` (the test metrics, training
time, parameter count), ``history.csv`` and ``evaluation/``. An arm the input size cannot carry
writes only the reason. The MLflow run nests under the ablation's parent run. Run every arm with
``make ablate`` (``ablation/dvc.yaml``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys

import mlflow

from pipeline import ablation, tracking
from pipeline.params import Params
from pipeline.paths import PRIORS_FILE, RAW_DIR, resume_dir
from pipeline.resolve import with_pretrained_weights
from pipeline.stages.common import stage_main

STAGE = "ablate"
MARKER = "metrics.json"
log = logging.getLogger(__name__)


def identity(params: Params, checksum: str) -> str:
    """One ablation = its budget, the shared model/train/evaluate sections and the data (not
    which arms and seeds: adding a seed extends the same ablation): the value of the
    ``psr.ablation`` tag of its parent and arm runs."""
    from psr.fileio import config_digest

    return config_digest(
        {
            "ablate": params.ablate.model_dump(mode="json", exclude={"arms", "seeds"}),
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "evaluate": params.evaluate.model_dump(mode="json"),
            "data": checksum,
        }
    )


def run(params: Params, arm: str, seed: int) -> None:
    from psr.data.prepared import data_checksum, read_manifest
    from psr.data.synthetic import GENERATION_FILE
    from psr.fileio import atomic_directory, write_json
    from psr.jobs import evaluate, train
    from psr.jobs.history import HISTORY_FILE
    from psr.models import load_model

    if (arm, seed) not in ablation.planned_runs(params):
        raise ValueError(
            f"({arm}, seed {seed}) is not in params.yaml's ablate.arms {params.ablate.arms} "
            f"x seeds {params.ablate.seeds}"
        )
    out = ablation.run_dir(arm, seed)
    reason = ablation.skip_reason(params, arm)
    if reason is not None:
        with atomic_directory(out, marker=MARKER) as tmp:
            write_json(tmp / MARKER, {"arm": arm, "seed": seed, "skipped": reason})
        log.info("%s skipped: %s", ablation.run_name(arm, seed), reason)
        return
    model = ablation.model_config(params, arm)
    if ablation.ARMS[arm].uses_sr_weights:  # params.yaml's file (official EDSR), else the stage's
        model = model.model_copy(update={"sr_weights": params.model.sr_weights})
        model = with_pretrained_weights(params.model_copy(update={"model": model})).model
    train_cfg = ablation.train_config(params, arm, seed)
    manifest = read_manifest(params.prepared_dir)
    ablation_id = identity(params, data_checksum(manifest))
    parent = tracking.parent_run(
        params.dataset_name,
        ablation.TAG_ABLATION,
        ablation_id,
        name="ablation",
        params={"ablate": params.ablate.model_dump(mode="json")},
    )
    logged = {"model": model.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json")}
    tags = {
        "mlflow.parentRunId": parent,
        ablation.TAG_ABLATION: ablation_id,
        "psr.arm": arm,
        "psr.seed": str(seed),
    }
    sidecar = RAW_DIR / GENERATION_FILE if params.breakdown_sidecar else None
    models = resume_dir(f"{STAGE}/{ablation.run_name(arm, seed)}")  # kept if interrupted
    with (
        atomic_directory(out, marker=MARKER) as tmp,
        tracking.stage_run(
            STAGE,
            params.dataset_name,
            params=logged,
            record=tmp / "mlflow_run.json",
            manifest=manifest,
            tags=tags,
        ) as active,
    ):
        mlflow.set_tag("mlflow.runName", ablation.run_name(arm, seed))
        epochs = tracking.EpochLogger()
        trained = train.run(
            model,
            train_cfg,
            params.prepared_dir,
            models,
            prior=PRIORS_FILE,
            reports=tmp,
            callbacks=[epochs],
            resume="auto",  # an interrupted run continues its last.pt
        )
        epochs.log_missing(trained.fit.history)
        seconds = sum(row["epoch_seconds"] for row in trained.fit.history)
        result = evaluate.run(
            params.evaluate,
            models / "best.pt",
            params.prepared_dir,
            tmp / "evaluation",
            sidecar=sidecar,
        )
        network, _ = load_model(models / "best.pt", map_location="cpu")
        metrics = {
            **result.logged_metrics(),
            "best_valid_acc": trained.metrics["best_valid_acc"],
            "train_seconds": seconds,
            "parameters": sum(p.numel() for p in network.parameters()),
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(tmp / HISTORY_FILE))
        mlflow.log_artifacts(str(tmp / "evaluation"), artifact_path="evaluation")
        ids = {"run_id": active.info.run_id, "parent_run_id": parent}
        write_json(tmp / MARKER, {"arm": arm, "seed": seed, **ids, **metrics})
        log.info(
            "%s: test accuracy %.4f, %.0f s",
            ablation.run_name(arm, seed),
            metrics["accuracy"],
            seconds,
        )
    (models / "last.pt").unlink()  # first: a kill after it leaves nothing to resume
    shutil.rmtree(models)


def _arguments(argv: list[str]) -> tuple[str, int]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.ablate")
    parser.add_argument("arm", choices=list(ablation.ARMS))
    parser.add_argument("seed", type=int)
    args = parser.parse_args(argv)
    return args.arm, args.seed


def main(argv: list[str] | None = None) -> int:
    arm, seed = _arguments(sys.argv[1:] if argv is None else argv)
    return stage_main(STAGE, lambda params: run(params, arm, seed))()


if __name__ == "__main__":
    sys.exit(main())
