"""MLflow conventions: where runs go, how they are named and tagged.

- Tracking URI: ``MLFLOW_TRACKING_URI`` when set (a server), else a SQLite database
  ``mlflow.db`` at the repository root, as an absolute path so that DVC experiment copies
  (``.dvc/tmp/exps/...``) log to the same database. Artifacts of experiments created here go to
  ``mlartifacts/`` next to it. ``make mlflow-server`` starts a tracking server
  (:mod:`pipeline.mlflow_server`).
- Credentials in a URI never reach logs, run records, parameters or tags (:func:`psr.uris.redact`);
  those of an ``http(s)://user:password@`` tracking URI go to MLflow as basic auth, and the
  URI MLflow is set to is the bare one.
- One experiment per dataset (``psr-<dataset name>``), one run per stage execution, named
  ``<stage> · <execution>`` and tagged with the pipeline execution it belongs to (one ``dvc
  repro``, DVC experiment or Prefect flow run: :mod:`pipeline.identity`), the git commit and
  whether the workspace differed from it, the params digest, the DVC stage and the data checksum.
- Runs that consume another stage's run copy what makes them comparable: an evaluate run carries
  its model's training parameters, the registered model its parameters and test metrics
  (:func:`recorded_run`, :func:`copy_params`).
- A locked SQLite database: MLflow waits 20 s for a lock and then fails; the stages wait
  ``PSR_TRACKING_LOCK_TIMEOUT_S`` (default 120 s; SQLite retries with backoff meanwhile), then
  fail with one line (:func:`unavailable`). An unreachable server: MLflow's own HTTP retries
  with backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), then the same one line. Training done so
  far is kept (the train stage resumes), so a rerun logs it without retraining.
- A stage killed mid-run cannot end its run: every run is tagged with its process, and the next
  stage run marks the RUNNING runs of dead processes KILLED, with the reason.
- Run-cache: when DVC restores a stage from its run-cache the stage does not run and logs
  nothing. Every stage therefore writes ``mlflow_run.json`` (run id, experiment, URI) into its
  outputs: a restored output still names the run that produced it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipeline import identity
from pipeline.paths import run_record_path
from pipeline.workspace import git_commit, shared_root, workspace
from psr.data.prepared import data_checksum
from psr.fileio import pid_alive, read_json, write_json
from psr.uris import redact, split_credentials

log = logging.getLogger(__name__)

#: MLflow caps a parameter value's length; longer values are truncated with a marker.
_MAX_PARAM_LENGTH = 6000

#: Tag keys used across stages.
TAG_STAGE = "dvc.stage"
TAG_DATASET = "psr.dataset"
TAG_DATA_CHECKSUM = "psr.data_checksum"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
#: ``host:pid`` of the process that runs the run: a RUNNING run whose process is gone was
#: killed, and the next stage run closes it (:func:`close_abandoned_runs`).
TAG_PROCESS = "psr.process"
TAG_END_REASON = "psr.end_reason"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db`` (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{shared_root() / 'mlflow.db'}"


def _local_backend(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "mssql")) or "://" not in uri


def _credentials_to_env(uri: str) -> str:
    """An ``http(s)://user:password@host`` URI without its credentials, which go to
    ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` (MLflow sends them as basic auth): MLflow
    prints its run links from the URI it is set to, and run records store it."""
    bare, user, password = split_credentials(uri)
    if password is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user or ""
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return bare


def experiment_name(dataset: str) -> str:
    return f"psr-{dataset}"


LOCK_TIMEOUT_ENV = "PSR_TRACKING_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 120.0


def lock_timeout_s() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 10**6:  # also nan and inf
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected seconds, 0 to 10^6")
    return seconds


def _wait_for_locks() -> None:
    """Make every SQLite connection wait :func:`lock_timeout_s` for a lock: set on connect,
    and MLflow's own ``PRAGMA busy_timeout = 20000`` on each session rewritten."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    if not event.contains(Pool, "connect", _on_connect):
        event.listen(Pool, "connect", _on_connect)
        event.listen(Engine, "before_cursor_execute", _busy_timeout, retval=True)


def _on_connect(dbapi_connection, record):
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(lock_timeout_s() * 1000)}")


def _busy_timeout(conn, cursor, statement, parameters, context, executemany):
    if statement.lstrip().upper().startswith("PRAGMA BUSY_TIMEOUT"):
        statement = f"PRAGMA busy_timeout = {int(lock_timeout_s() * 1000)};"
    return statement, parameters


def unavailable(err: BaseException) -> str | None:
    """One line for a tracking or tuning database that is unavailable (locked, a server that
    is down): what and what to do; None for any other error."""
    if type(err).__name__ == "StorageInternalError" and err.__cause__ is not None:
        err = err.__cause__  # Optuna wraps the database's error
    where = f"the MLflow database {redact(mlflow.get_tracking_uri())}"
    if _raised_in(err, "optuna"):
        where = "the Optuna storage (tune.storage)"
    text = str(err.message if isinstance(err, MlflowException) else err)
    first = next((line.strip() for line in text.splitlines() if line.strip()), repr(err))
    first = redact(first)  # a driver's error may quote the URL it was given
    kept = "training done so far is kept; rerun the stage once it is available"
    if "database is locked" in first and (
        isinstance(err, MlflowException) or type(err).__name__ == "OperationalError"
    ):
        return (
            f"{where} stayed locked for {lock_timeout_s():.0f} s (another process holds it: "
            f"an open sqlite3 shell, a stuck stage?): {first}; {kept} (or raise "
            f"{LOCK_TIMEOUT_ENV})"
        )
    down = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out")
    if isinstance(err, MlflowException) and any(s in first for s in down):
        return (
            f"the MLflow server {redact(mlflow.get_tracking_uri())} is not reachable: {first}; "
            f"start it, or unset MLFLOW_TRACKING_URI to use the local database; {kept}"
        )
    return None


def _raised_in(err: BaseException, package: str) -> bool:
    """Whether ``package``'s code is on ``err``'s traceback (who was talking to the database)."""
    marker = f"{os.sep}{package}{os.sep}"
    frame = err.__traceback__
    while frame is not None:
        if marker in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False


def connect() -> str:
    """Point MLflow at :func:`tracking_uri`, an http(s) URI's credentials sent as basic auth
    rather than left in the URI MLflow prints; return the URI as configured."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(_credentials_to_env(uri))
    return uri


@contextmanager
def _one_creator(uri: str) -> Iterator[None]:
    """For a SQLite file, one process at a time in the folder that holds it while MLflow opens
    the store or creates a shared run: the first creates the tables (or the run), the others
    then find them. Two stages started at once on a new database both ran MLflow's migrations,
    and one failed ("Online migration expected to match one row")."""
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def use_experiment(dataset: str) -> str:
    """Point MLflow at :func:`tracking_uri` and the dataset's experiment; return its id.

    With a local database the experiment's artifacts go to ``<repo>/mlartifacts/<experiment>``;
    a tracking server decides its own artifact store.
    """
    _wait_for_locks()
    uri = connect()
    name = experiment_name(dataset)
    with _one_creator(uri):
        experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if _local_backend(uri):
            location = (shared_root() / "mlartifacts" / name).as_uri()
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel worker
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(params: Mapping[str, Any]) -> None:
    """Log nested parameters flattened with dotted keys (values stringified and capped)."""
    flat = {}
    for key, value in flatten(params).items():
        text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
        text = redact(text)  # e.g. tune.storage, a database URL
        if len(text) > _MAX_PARAM_LENGTH:
            text = text[: _MAX_PARAM_LENGTH - 3] + "..."
        flat[key] = text
    if flat:
        mlflow.log_params(flat)


def run_record(run: mlflow.ActiveRun, stage: str) -> dict[str, str]:
    """What a stage output stores to point back at its MLflow run."""
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": run.info.run_name or stage,
        "stage": stage,
        "tracking_uri": redact(mlflow.get_tracking_uri()),
    }


def run_tags(dataset: str, manifest: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The tags of every run: dataset, workspace, pipeline execution, git commit and dirty state,
    params digest, data checksum (with a manifest)."""
    tags = {TAG_DATASET: dataset, "psr.workspace": str(workspace()), **process_tag()}
    tags |= identity.execution_tags() | identity.source_tags()
    if commit := git_commit():
        tags[TAG_GIT_COMMIT] = commit
    if manifest is not None:
        tags[TAG_DATA_CHECKSUM] = data_checksum(manifest)
    return tags


def process_tag() -> dict[str, str]:
    return {TAG_PROCESS: f"{socket.gethostname()}:{os.getpid()}"}


def process_gone(owner: str) -> bool:
    """Whether the process of a :func:`process_tag` value is known to be dead: it ran on this
    host and its pid no longer runs (another host's, or no owner: unknown, so False)."""
    owner_host, _, pid = owner.rpartition(":")
    return owner_host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def close_abandoned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment whose process on this host is gone (a
    stage or trial killed before it could end its run), with the reason; their ids."""
    closed = []
    client = mlflow.MlflowClient()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    for run in running:
        owner = run.data.tags.get(TAG_PROCESS, "")
        if not process_gone(owner):
            continue
        reason = f"process {owner} ended without closing the run; closed by the next stage run"
        client.set_tag(run.info.run_id, TAG_END_REASON, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
        log.warning(
            "run %s (%s) was left RUNNING by a killed process: marked KILLED",
            run.info.run_id,
            run.info.run_name,
        )
    return closed


@contextmanager
def stage_run(
    stage: str,
    dataset: str,
    *,
    params: Mapping[str, Any] | None = None,
    record: Path | None = None,
    manifest: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one execution of a pipeline stage, named ``<stage> · <execution>``.

    Logs ``params`` (flattened), tags the run (:func:`run_tags`, the DVC stage) and, when the
    block succeeds, writes the run's :func:`run_record` to ``record``.
    """
    close_abandoned_runs(use_experiment(dataset))
    all_tags = {TAG_STAGE: stage, **run_tags(dataset, manifest), **(tags or {})}
    all_tags = {key: redact(str(value)) for key, value in all_tags.items()}
    name = f"{stage} · {identity.label(all_tags)}"
    with mlflow.start_run(run_name=name, tags=all_tags) as run:
        if params:
            log_params(params)
        yield run
        if record is not None:
            write_json(record, run_record(run, stage))


def parent_run(
    dataset: str, tag: str, value: str, *, name: str, params: Mapping | None = None
) -> str:
    """The id of the run tagged ``tag=value`` in the dataset's experiment, created (with
    ``params`` logged) when there is none: the parent that runs in other processes nest under
    (``mlflow.parentRunId``), e.g. every arm of one ablation."""
    experiment_id = use_experiment(dataset)
    with _one_creator(mlflow.get_tracking_uri()):  # runs started side by side find one parent
        if found := _first_run(experiment_id, tag, value):
            return found
        with mlflow.start_run(run_name=name, tags={tag: value, **run_tags(dataset)}) as run:
            if params:
                log_params(params)
    return run.info.run_id


def _first_run(experiment_id: str, tag: str, value: str) -> str | None:
    """The earliest run of the experiment tagged ``tag=value``, or None."""
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{value}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
        output_format="list",
    )
    return found[0].info.run_id if found else None


def recorded_run(stage: str) -> mlflow.entities.Run | None:
    """The run that a stage's outputs name (``reports/<stage>/mlflow_run.json``), from the
    current tracking store; None (with a warning) when there is no record or the store does not
    have that run (the outputs were made against another tracking URI)."""
    path = run_record_path(stage)
    if not path.is_file():
        log.warning("%s not found: nothing of the %s run is copied", path, stage)
        return None
    run_id = read_json(path)["run_id"]
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.warning(
            "%s names run %s, which %s does not have: nothing of it is copied",
            path,
            run_id,
            redact(mlflow.get_tracking_uri()),
        )
        return None


def copy_params(*runs: mlflow.entities.Run | None) -> dict[str, str]:
    """The parameters of ``runs`` (later ones win), logged to the active run: e.g. the training
    parameters on the evaluate run, so that one view compares test accuracy with them."""
    params: dict[str, str] = {}
    for run in runs:
        if run is not None:
            params.update(run.data.params)
    if params and mlflow.active_run() is not None:
        mlflow.log_params(params)  # their sections (model, train, ...) are not the run's own
    return params


class EpochLogger:
    """An engine callback that logs each epoch's numeric metrics to the active run."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.logged: set[int] = set()

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        numeric = {
            f"{self.prefix}{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if numeric:
            mlflow.log_metrics(numeric, step=int(epoch))
        self.logged.add(int(epoch))

    def log_missing(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log the epochs of ``history`` this logger did not see: those a resumed training
        had done before it was interrupted, so the run shows the whole curve."""
        for metrics in history:
            if int(metrics["epoch"]) not in self.logged:
                self(int(metrics["epoch"]), metrics)
