"""Every path of the pipeline's workspace, in one place.

DVC runs each stage with the repository (or an experiment copy of it) as working directory, so
these are relative paths. Stages, flows and tests take their paths from here and never from each
other; ``dvc.yaml`` declares the same paths as outputs.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")

#: download -> the raw dataset in its published format.
RAW_DIR = Path("data/raw")
#: prepare -> ``<name>/`` in the prepared format.
PREPARED_DIR = Path("data/prepared")
#: priors -> the PDLS label prior.
PRIORS_DIR = Path("data/priors")
PRIORS_FILE = PRIORS_DIR / "priors.json"
#: sr_pretrain -> the x2 SR network's weights and what they are.
SR_DIR = Path("models/sr")
SR_INFO_FILE = SR_DIR / "sr.json"
#: backbone -> the FER+ it trains on (prepared) and the vgg16 checkpoint every branch starts from.
BACKBONE_DATA = Path("data/backbone")
BACKBONE_DIR = Path("models/backbone")
BACKBONE_INFO_FILE = BACKBONE_DIR / "backbone.json"
#: train -> best.pt (inference checkpoint) and last.pt (resumable state).
MODEL_DIR = Path("models/psr")
CHECKPOINT = MODEL_DIR / "best.pt"
#: ``<stage>/``: an interrupted training's last.pt, continued by the next run of the stage.
RESUME_DIR = Path("models/resume")

#: ``reports/<stage>/``: each stage's metrics, figures and MLflow run record.
REPORTS_DIR = Path("reports")
RUN_RECORD = "mlflow_run.json"
TUNE_BEST_FILE = REPORTS_DIR / "tune" / "best_params.json"
EVALUATE_METRICS = REPORTS_DIR / "evaluate" / "metrics.json"
REGISTRY_FILE = REPORTS_DIR / "registry.json"


def report_dir(stage: str) -> Path:
    return REPORTS_DIR / stage


def run_record_path(stage: str) -> Path:
    """The MLflow run record a stage leaves among its outputs (docs/pipeline.md)."""
    return report_dir(stage) / RUN_RECORD


def prepared_dir(name: str) -> Path:
    return PREPARED_DIR / name


def resume_dir(stage: str) -> Path:
    """Where a stage that trains keeps its resumable state while it runs (not a DVC output:
    DVC deletes a stage's outputs before running it); emptied when the stage succeeds."""
    return RESUME_DIR / stage
