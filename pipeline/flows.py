"""Prefect flows over the DVC pipeline.

- ``psr-pipeline``: the DVC stages in DAG order, one task each (``dvc repro --single-item
  <stage>``: DVC decides what is stale, so the tasks never use Prefect's cache), their output
  streamed to the flow's log. Ends with a markdown artifact: the metrics table and the registry
  decision.
- ``psr-ablate``: the paper's ablation (``ablation/dvc.yaml``): the data stages, one task per
  arm and seed (``dvc repro --single-item ablation/dvc.yaml:arm@<arm>-<seed>``), the report;
  ends with the results table as a markdown artifact.
- ``psr-tune``: N Optuna workers in parallel processes against one shared storage (a
  JournalStorage file by default), their trials nested under one MLflow run. Point
  ``tune.storage`` at the same storage and the DVC ``tune`` stage then finds the budget spent.

Every stage command runs under a timeout (:data:`TIMEOUT_S`, per run: the ``timeouts``
parameter) and every flow under :data:`FLOW_TIMEOUT_S`; a flow that ends early stops the commands
its tasks still run. A failed stage is retried (:data:`RETRIES`: ``download`` for the network,
the GPU stages once for a lost device) unless it ran past its timeout: DVC reruns the stage
from its inputs, and backbone, train and the ablation arms continue from their last checkpoint
(``models/resume/``). The stages that compute on the accelerator (:data:`GPU_STAGES`, the
ablation arms) are tagged ``gpu`` and psr-tune's workers together hold one slot of the same
limit: Prefect's tag concurrency limit ``gpu``, created with 1 slot if missing (one GPU job at a
time across the flow runs of every worker; ``prefect concurrency-limit create gpu 2`` allows
two). DVC's ``git add`` hint is printed once, at the end of a flow, not per stage.

Deployments: ``prefect.yaml`` (``local``: a ``process`` pool on this checkout; ``team``: any
worker clones the repository at the deployed commit, see :mod:`pipeline.team`); Prefect's
settings: ``prefect.toml``; see the Makefile verbs ``prefect-server``, ``prefect-worker``,
``deploy`` and ``flow-run``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.paths import PARAMS_FILE, REGISTRY_FILE, report_dir
from psr.uris import redact

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
HOUR = 3600
#: Seconds a stage command may run before it is stopped: the paper's recipes on one GPU take
#: hours (train, tune), a real dataset's prepare up to an hour. Ablation arms: ``train``'s.
TIMEOUT_S: dict[str, float] = {
    "validate": 0.25 * HOUR,
    "download": 2 * HOUR,
    "prepare": 4 * HOUR,
    "priors": 0.5 * HOUR,
    "sr_pretrain": 6 * HOUR,
    "backbone": 24 * HOUR,
    "tune": 72 * HOUR,
    "train": 24 * HOUR,
    "evaluate": 2 * HOUR,
    "register": HOUR,
    "ablation_report": HOUR,
}
#: Every flow's limit: a stuck run ends within a week whatever its stages' limits.
FLOW_TIMEOUT_S = 7 * 24 * HOUR
#: The stages that compute on the accelerator: one such job at a time (tag limit gpu).
GPU_STAGES = frozenset({"sr_pretrain", "backbone", "tune", "train", "evaluate"})
GPU_TAG = "gpu"
GPU_LIMIT = f"tag:{GPU_TAG}"  # the name Prefect stores a tag limit under (a global limit)
GPU_SLOTS = 1  # the limit's size when a flow creates it
#: Retries of a failed stage: the network (download) and a lost or reset device (GPU stages).
#: A stage past its timeout is not retried (retry_after_failure).
RETRIES = {"download": 2, "gpu": 1}
RETRY_DELAY_S = [10, 60]  # the first retry, then every later one
#: DVC's hint after a stage that changed dvc.lock: its first and last lines.
GIT_HINT = ("To track the changes with git, run:", "dvc config core.autostage true")
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


#: The commands the flows' tasks are running (tasks run in threads: see stops_its_commands).
_RUNNING: set[subprocess.Popen] = set()


def stream(
    command: list[str], cwd: Path, prefix: str = "", timeout_s: float | None = None
) -> list[str]:
    """Run ``command``, sending each output line to the run logger; raise if it fails or runs
    past ``timeout_s`` (it is stopped then). Returns the files of DVC's ``git add`` hints, which
    stay out of the log (the flow prints one hint at its end)."""
    logger = get_run_logger()
    limit = f" (timeout {datetime.timedelta(seconds=timeout_s)})" if timeout_s else ""
    logger.info("$ %s%s", redact(" ".join(command)), limit)  # a storage URL's password
    to_track: list[str] = []
    in_hint = timed_out = False
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        process_group=0,  # its own group: _stop signals every process under it
    ) as process:
        assert process.stdout is not None
        _RUNNING.add(process)

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            _stop(process)

        timer = threading.Timer(timeout_s, expire) if timeout_s else None
        try:
            if timer:
                timer.start()
            for line in process.stdout:
                text = line.strip()
                if text == GIT_HINT[0]:
                    in_hint = True
                elif in_hint:
                    to_track += text.split()[2:] if text.startswith("git add ") else []
                    in_hint = text != GIT_HINT[1]
                elif text:
                    logger.info("%s%s", prefix, line.rstrip())
            code = process.wait()
        except BaseException:  # an interrupt or a flow timeout in this thread: no orphan
            _stop(process)
            raise
        finally:
            if timer:
                timer.cancel()
            _RUNNING.discard(process)
    if timed_out:
        raise TimeoutError(
            f"{' '.join(command)} ran past its timeout of {timeout_s:g} s and was stopped "
            '(a longer one for this run: the flow parameter timeouts, e.g. {"train": 172800})'
        )
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {code}")
    return to_track


def _stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """TERM the command's process group, then KILL what is left of it after ``grace_s``.
    The whole group: a stage's command keeps the output pipe open when only ``dvc`` dies, and
    a signal to the group also reaches a process its parent forked a moment ago."""
    with contextlib.suppress(ProcessLookupError):  # the group may have ended already
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_running(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _group_running(process: subprocess.Popen) -> bool:
    """Whether a process of the command's group still runs. Popen reaps its own child (so it
    keeps the exit status); an orphan's zombie does not count: some containers' init never
    reaps it."""
    process.poll()
    for member in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if (
                member.info["status"] != psutil.STATUS_ZOMBIE
                and os.getpgid(member.pid) == process.pid
            ):
                return True
    return False


@contextlib.contextmanager
def stops_its_commands() -> Iterator[None]:
    """A flow body: when it ends early (a timeout, a failed parallel worker, a cancellation)
    the commands its tasks still run are stopped; the tasks' threads would leave them running."""
    try:
        yield
    finally:
        for process in list(_RUNNING):
            _stop(process)


def ensure_gpu_limit() -> None:
    """Create the tag concurrency limit ``gpu`` with :data:`GPU_SLOTS` slots if it does not
    exist (an existing one keeps its size: the user's choice)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(GPU_TAG)
        except ObjectNotFound:  # a second flow run creating it too sets the same size
            client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=GPU_SLOTS)


@contextlib.contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold a slot of the ``gpu`` tag limit (waiting for one) while the block runs: several
    untagged tasks that are one GPU job together (psr-tune's workers)."""
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_LIMIT, occupy=1, strict=True):
        yield


def uses_gpu(stage: str) -> bool:
    return stage in GPU_STAGES or stage.startswith(f"{ABLATION_DVC}:arm@")


def retry_after_failure(task, task_run, state) -> bool:
    """Prefect's retry condition: any failure but a timeout (a stuck stage stays stuck)."""
    return not isinstance(state.data, TimeoutError)


def stage_task(stage: str, **options: Any):
    """:func:`run_stage` as ``stage`` runs: tagged ``gpu`` if it computes on the accelerator,
    with its retries (:data:`RETRIES`); ``options`` as for ``Task.with_options``."""
    gpu = uses_gpu(stage)
    return run_stage.with_options(
        tags={GPU_TAG} if gpu else set(),
        retries=RETRIES.get("gpu" if gpu else stage, 0),
        retry_delay_seconds=RETRY_DELAY_S,
        retry_condition_fn=retry_after_failure,
        **options,
    )


def timeout_for(stage: str, timeouts: dict[str, float] | None = None) -> float:
    """The seconds ``stage`` may run: ``timeouts`` (a flow parameter) over :data:`TIMEOUT_S`."""
    name = stage.removeprefix(f"{ABLATION_DVC}:")
    name = "train" if name.startswith("arm@") else "ablation_report" if name == "report" else name
    return float({**TIMEOUT_S, **(timeouts or {})}[name])


def check_timeouts(timeouts: dict[str, float] | None) -> None:
    """The ``timeouts`` parameter names stages of :data:`TIMEOUT_S`, each with seconds > 0."""
    unknown = sorted(set(timeouts or {}) - set(TIMEOUT_S))
    if unknown:
        raise ValueError(f"timeouts: unknown stage(s) {unknown}; stages: {sorted(TIMEOUT_S)}")
    bad = {k: v for k, v in (timeouts or {}).items() if not v > 0}
    if bad:
        raise ValueError(f"timeouts: seconds must be > 0, got {bad}")


def log_git_hint(files: list[str]) -> None:
    """DVC's hint, once for the whole flow: the files its stages changed, to commit."""
    if files:
        get_run_logger().info("%s git add %s", GIT_HINT[0], " ".join(sorted(set(files))))


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def run_stage(
    stage: str, repo: str, force: bool = False, timeouts: dict[str, float] | None = None
) -> list[str]:
    """``dvc repro --single-item <stage>``: runs the stage if DVC finds it stale, under its
    timeout; returns the files DVC asks to ``git add``. Submit it through :func:`stage_task`
    (the ``gpu`` tag, retries)."""
    command = [_tool("dvc"), "repro", "--single-item", stage]
    if force:
        command.append("--force")
    return stream(command, Path(repo), timeout_s=timeout_for(stage, timeouts))


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


@flow(name="psr-pipeline", log_prints=True, timeout_seconds=FLOW_TIMEOUT_S)
def psr_pipeline(
    repo: str | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    set_params: list[str] | None = None,
    timeouts: dict[str, float] | None = None,
) -> str:
    """Run the DVC stages in DAG order (all, or ``stages``), then publish the report artifact.

    ``set_params`` (``["train.phase1.epochs=3"]``) edits params.yaml first, as
    ``dvc exp run -S`` does in the workspace; the file changes only if the result validates.
    ``timeouts`` (``{"train": 172800}``) raises stages' limits (seconds) over :data:`TIMEOUT_S`.
    """
    from pipeline.params import set_params as apply

    root = Path(repo).resolve() if repo else REPO
    selected = list(stages or STAGES)
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
    check_timeouts(timeouts)
    if set_params:
        apply(root / PARAMS_FILE, list(set_params))
    ensure_gpu_limit()
    previous, to_track = None, []
    with stops_its_commands():
        for stage in (s for s in STAGES if s in selected):  # DAG order whatever the input order
            wait = [previous] if previous else None
            future = stage_task(stage).submit(stage, str(root), force, timeouts, wait_for=wait)
            to_track += future.result()  # a failed stage stops the flow
            previous = future
    log_git_hint(to_track)
    markdown = report_markdown(root)
    create_markdown_artifact(
        markdown=markdown, key=ARTIFACT_KEY, description="PSR-FER metrics and registry decision"
    )
    return markdown


ABLATION_DVC = "ablation/dvc.yaml"
#: The main pipeline's stages the ablation's runs read (data, prior, SR weights).
ABLATION_INPUTS = ("download", "prepare", "priors", "sr_pretrain")


@flow(name="psr-ablate", log_prints=True, timeout_seconds=FLOW_TIMEOUT_S)
def psr_ablate(
    repo: str | None = None,
    force: bool = False,
    set_params: list[str] | None = None,
    timeouts: dict[str, float] | None = None,
) -> str:
    """The ablation family of params.yaml's ``ablate`` section, one task per arm and seed
    (sequential: each run uses the machine), then the report; returns results.md.

    ``set_params`` (``["ablate.seeds=[0]"]``) edits params.yaml first, ``timeouts`` raises
    stages' limits (an arm's: ``train``'s), as in ``psr-pipeline``.
    """
    from pipeline import ablation
    from pipeline.params import load_params
    from pipeline.params import set_params as apply
    from pipeline.stages.ablation_report import RESULTS_FILE

    root = Path(repo).resolve() if repo else REPO
    check_timeouts(timeouts)
    if set_params:
        apply(root / PARAMS_FILE, list(set_params))
    with contextlib.chdir(root):
        runs = ablation.planned_runs(load_params())
    ensure_gpu_limit()
    to_track: list[str] = []
    with stops_its_commands():
        for stage in ABLATION_INPUTS:
            to_track += stage_task(stage).submit(stage, str(root), False, timeouts).result()
        for arm, seed in runs:
            name = f"{ABLATION_DVC}:arm@{arm}-{seed}"
            runner = stage_task(name, task_run_name=ablation.run_name(arm, seed))
            to_track += runner.submit(name, str(root), force, timeouts).result()
        report = f"{ABLATION_DVC}:report"
        to_track += stage_task(report).submit(report, str(root), force, timeouts).result()
    log_git_hint(to_track)
    markdown = (root / RESULTS_FILE).read_text(encoding="utf-8")
    create_markdown_artifact(
        markdown=markdown, key="psr-ablation", description="PSR-FER ablation results"
    )
    return markdown


@task(cache_policy=NO_CACHE, task_run_name="tune-worker-{index}")
def tune_worker(
    index: int,
    repo: str,
    parent_run_id: str,
    storage: str,
    n_trials: int | None,
    timeout_s: float | None = None,
):
    """One Optuna worker process running trials of the shared study (its index decides its
    sampler seed); stopped after ``timeout_s``."""
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
    stream(command, Path(repo), prefix=f"[worker {index}] ", timeout_s=timeout_s)


@flow(name="psr-tune", log_prints=True, timeout_seconds=FLOW_TIMEOUT_S)
def psr_tune(
    repo: str | None = None,
    workers: int = 2,
    n_trials: int | None = None,
    storage: str = "journal:optuna.journal",
    timeouts: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Fill the tune stage's study with ``workers`` parallel processes (budget: ``n_trials``,
    default ``tune.n_trials``), after bringing the tune stage's inputs up to date with DVC.
    The workers together are one GPU job (one slot of the ``gpu`` tag limit; the workers are not
    tagged) under the ``tune`` timeout."""
    import mlflow
    import optuna

    from pipeline import tracking, tuning
    from pipeline.params import load_params

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(repo).resolve() if repo else REPO
    check_timeouts(timeouts)
    ensure_gpu_limit()
    to_track: list[str] = []
    with stops_its_commands():
        for stage in STAGES[: STAGES.index("tune")]:
            to_track += stage_task(stage).submit(stage, str(root), False, timeouts).result()
    log_git_hint(to_track)
    with contextlib.chdir(root), stops_its_commands():
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
            limit = timeout_for("tune", timeouts)
            with gpu_slot():
                futures = [
                    tune_worker.submit(i, str(root), parent.info.run_id, storage, n_trials, limit)
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
        f"- storage: `{redact(storage)}`, workers: {workers}",
        f"- best validation accuracy: **{document['best_value']:.4f}**"
        f" (trial {document['best_trial']})",
        *(f"- `{k}` = {v}" for k, v in document["params"].items()),
        *(f"- {k}: {v}" for k, v in metrics.items() if k.startswith("trials_")),
        *(  # the spread of the search against the seed noise of the untuned default
            f"- {k}: {metrics[k]:.4f}"
            for k in ("trial_value_std", "baseline_seed_std", "trial_std_over_seed_std")
            if k in metrics
        ),
    ]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="psr-tune-report")
    return {**document, **metrics}
