"""Prefect flows over the DVC pipeline.

- ``psr-pipeline``: the DVC stages in DAG order, one task each (``dvc repro --single-item
  <stage>``: DVC decides what is stale, so the tasks never use Prefect's cache), their output
  streamed to the flow's log, ``download`` retried (it is the only one that touches the network).
  Ends with a markdown artifact: the metrics table and the registry decision.
- ``psr-ablate``: the paper's ablation (``ablation/dvc.yaml``): the data stages, one task per
  arm and seed (``dvc repro --single-item ablation/dvc.yaml:arm@<arm>-<seed>``), the report;
  ends with the results table as a markdown artifact.
- ``psr-tune``: N Optuna workers in parallel processes against one shared storage (a
  JournalStorage file by default), their trials nested under one MLflow run. Point
  ``tune.storage`` at the same storage and the DVC ``tune`` stage then finds the budget spent.

Deployments: ``prefect.yaml`` (a ``process`` work pool); see the Makefile verbs ``prefect-server``,
``prefect-worker``, ``deploy`` and ``flow-run``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.paths import PARAMS_FILE, REGISTRY_FILE, report_dir

STAGES: tuple[str, ...] = (
    "validate",
    "download",
    "prepare",
    "priors",
    "sr_pretrain",
    "backbone",
    "tune",
    "train",
    "evaluate",
    "register",
)
REPO = Path(__file__).resolve().parents[1]
#: Stages whose failure may be transient (network): retried by Prefect.
RETRIED = {"download": 2}
ARTIFACT_KEY = "psr-pipeline-report"
#: Per-class scores stay in reports/evaluate (the artifact shows the headline numbers).
PER_CLASS_PREFIXES = ("precision_", "recall_", "f1_", "support_")


def _environment() -> dict[str, str]:
    """The stages' environment: this interpreter's bin first (stage commands call ``python``),
    no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DVC_NO_ANALYTICS="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pipeline/stages/__init__.py
    from prefect.runtime import flow_run

    if flow_run.get_id():  # the stages' MLflow runs name their flow run (pipeline/identity.py)
        env["PREFECT__FLOW_RUN_ID"] = flow_run.get_id()
    return env


def _tool(name: str) -> str:
    """A console script of this environment (``dvc``), else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def stream(command: list[str], cwd: Path, prefix: str = "") -> None:
    """Run ``command``, sending each output line to the run logger; raise if it fails."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(command))
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            logger.info("%s%s", prefix, line.rstrip())
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {code}")


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def run_stage(stage: str, repo: str, force: bool = False) -> str:
    """``dvc repro --single-item <stage>``: runs the stage if DVC finds it stale."""
    command = [_tool("dvc"), "repro", "--single-item", stage]
    if force:
        command.append("--force")
    stream(command, Path(repo))
    return stage


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_markdown(repo: Path) -> str:
    """The metrics table and the registry decision, from the stages' reports."""
    rows = []
    for stage in ("evaluate", "train", "tune", "sr_pretrain"):
        for key, value in _read(repo / report_dir(stage) / "metrics.json").items():
            per_class = key.startswith(PER_CLASS_PREFIXES)
            if isinstance(value, int | float) and not isinstance(value, bool) and not per_class:
                rows.append(f"| {stage} | {key} | {_number(value)} |")
    lines = ["# PSR-FER pipeline", "", "| stage | metric | value |", "|---|---|---|", *rows]
    registry = _read(repo / REGISTRY_FILE)
    if registry:
        metric = registry.get("metric", {})
        aliases = ", ".join(f"`{a}` -> v{v}" for a, v in sorted(registry["aliases"].items()))
        lines += [
            "",
            "## Model registry",
            "",
            f"- model: `{registry['name']}` version **{registry['version']}**",
            f"- decision: **{registry['decision']}** ({metric.get('reason', '')})",
            f"- aliases: {aliases}",
        ]
    return "\n".join(lines) + "\n"


@flow(name="psr-pipeline", log_prints=True)
def psr_pipeline(
    repo: str | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    set_params: list[str] | None = None,
) -> str:
    """Run the DVC stages in DAG order (all, or ``stages``), then publish the report artifact.

    ``set_params`` (``["train.phase1.epochs=3"]``) edits params.yaml first, as
    ``dvc exp run -S`` does in the workspace; the file changes only if the result validates.
    """
    from pipeline.params import set_params as apply

    root = Path(repo).resolve() if repo else REPO
    selected = list(stages or STAGES)
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
    if set_params:
        apply(root / PARAMS_FILE, list(set_params))
    previous = None
    for stage in (s for s in STAGES if s in selected):  # DAG order whatever the input order
        retries = RETRIED.get(stage, 0)
        runner = run_stage.with_options(retries=retries, retry_delay_seconds=10)
        future = runner.submit(stage, str(root), force, wait_for=[previous] if previous else None)
        future.result()  # a failed stage stops the flow
        previous = future
    markdown = report_markdown(root)
    create_markdown_artifact(
        markdown=markdown, key=ARTIFACT_KEY, description="PSR-FER metrics and registry decision"
    )
    return markdown


ABLATION_DVC = "ablation/dvc.yaml"
#: The main pipeline's stages the ablation's runs read (data, prior, SR weights).
ABLATION_INPUTS = ("download", "prepare", "priors", "sr_pretrain")


@flow(name="psr-ablate", log_prints=True)
def psr_ablate(
    repo: str | None = None, force: bool = False, set_params: list[str] | None = None
) -> str:
    """The ablation family of params.yaml's ``ablate`` section, one task per arm and seed
    (sequential: each run uses the machine), then the report; returns results.md.

    ``set_params`` (``["ablate.seeds=[0]"]``) edits params.yaml first, as in ``psr-pipeline``.
    """
    from pipeline import ablation
    from pipeline.params import load_params
    from pipeline.params import set_params as apply
    from pipeline.stages.ablation_report import RESULTS_FILE

    root = Path(repo).resolve() if repo else REPO
    if set_params:
        apply(root / PARAMS_FILE, list(set_params))
    with contextlib.chdir(root):
        runs = ablation.planned_runs(load_params())
    for stage in ABLATION_INPUTS:
        run_stage.with_options(retries=RETRIED.get(stage, 0)).submit(stage, str(root)).result()
    for arm, seed in runs:
        name = f"{ABLATION_DVC}:arm@{arm}-{seed}"
        run_stage.with_options(task_run_name=ablation.run_name(arm, seed)).submit(
            name, str(root), force
        ).result()
    run_stage.submit(f"{ABLATION_DVC}:report", str(root), force).result()
    markdown = (root / RESULTS_FILE).read_text(encoding="utf-8")
    create_markdown_artifact(
        markdown=markdown, key="psr-ablation", description="PSR-FER ablation results"
    )
    return markdown


@task(cache_policy=NO_CACHE, task_run_name="tune-worker-{index}")
def tune_worker(index: int, repo: str, parent_run_id: str, storage: str, n_trials: int | None):
    """One Optuna worker process running trials of the shared study (its index decides its
    sampler seed)."""
    command = [
        sys.executable,
        "-m",
        "pipeline.stages.tune",
        "worker",
        "--parent-run-id",
        parent_run_id,
        "--storage",
        storage,
        "--worker",
        str(index),
    ]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    stream(command, Path(repo), prefix=f"[worker {index}] ")


@flow(name="psr-tune", log_prints=True)
def psr_tune(
    repo: str | None = None,
    workers: int = 2,
    n_trials: int | None = None,
    storage: str = "journal:optuna.journal",
) -> dict[str, Any]:
    """Fill the tune stage's study with ``workers`` parallel processes (budget: ``n_trials``,
    default ``tune.n_trials``), after bringing the tune stage's inputs up to date with DVC."""
    import mlflow
    import optuna

    from pipeline import tracking, tuning
    from pipeline.params import load_params

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(repo).resolve() if repo else REPO
    for stage in STAGES[: STAGES.index("tune")]:
        run_stage.with_options(retries=RETRIED.get(stage, 0)).submit(stage, str(root)).result()
    with contextlib.chdir(root):
        params = load_params()
        params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"storage": storage})}
        )
        tracking.use_experiment(params.dataset_name)
        params, name = tuning.study_for(params)
        tuning.queue_baseline(tuning.open_study(params, name), params)  # once, before the workers
        with mlflow.start_run(
            run_name="tune-parallel", tags={tracking.TAG_STAGE: "tune", "psr.workers": str(workers)}
        ) as parent:
            futures = [
                tune_worker.submit(i, str(root), parent.info.run_id, storage, n_trials)
                for i in range(1, workers + 1)  # worker 0 is the DVC stage
            ]
            for future in futures:
                future.result()
            study = optuna.load_study(study_name=name, storage=tuning.open_storage(storage))
            document, metrics = tuning.summarize(study)
            mlflow.log_metrics(metrics)
    lines = [
        f"# Optuna study `{name}`",
        "",
        f"- storage: `{storage}`, workers: {workers}",
        f"- best validation accuracy: **{document['best_value']:.4f}**"
        f" (trial {document['best_trial']})",
        *(f"- `{k}` = {v}" for k, v in document["params"].items()),
        *(f"- {k}: {v}" for k, v in metrics.items() if k.startswith("trials_")),
    ]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="psr-tune-report")
    return {**document, **metrics}
