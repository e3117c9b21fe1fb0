"""MLflow conventions: shared database location, tags, run records, epoch logging."""

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest

from pipeline import tracking
from pipeline.workspace import resolve_shared, shared_root
from psr.data.prepared import data_checksum


def test_experiment_copies_share_the_outer_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("PSR_SHARED_ROOT", raising=False)
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    assert shared_root(copy) == tmp_path / "repo"
    assert shared_root(tmp_path / "repo") == tmp_path / "repo"
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    assert resolve_shared("optuna.journal") == tmp_path / "repo" / "optuna.journal"
    assert resolve_shared("/abs/file") == Path("/abs/file")


def test_tracking_uri_env_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_data_checksum_is_stable_and_needs_checksums():
    a = data_checksum({"checksums": {"train.npy": "1", "test.npy": "2"}})
    b = data_checksum({"checksums": {"test.npy": "2", "train.npy": "1"}, "x": 3})
    assert a == b and len(a) == 64
    assert a != data_checksum({"checksums": {"train.npy": "1", "test.npy": "3"}})
    with pytest.raises(ValueError, match="no 'checksums'"):
        data_checksum({"dataset": "ferplus"})


def test_flatten():
    flat = tracking.flatten({"train": {"phase1": {"lrs": [1, 2]}, "seed": 0}, "x": {}})
    assert flat == {"train.phase1.lrs": [1, 2], "train.seed": 0, "x": {}}


def test_stage_run_logs_tags_params_and_writes_its_record(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PSR_SHARED_ROOT", raising=False)
    record = tmp_path / "reports" / "train" / "mlflow_run.json"
    manifest = {"checksums": {"train.npy": "abc"}}
    with tracking.stage_run(
        "train", "unit", params={"train": {"lr": 0.1}}, record=record, manifest=manifest
    ) as run:
        epochs = tracking.EpochLogger()
        epochs(2, {"epoch": 2, "valid_acc": 0.75})  # a resumed run: epoch 1 was done before
        history = [{"epoch": 1, "valid_acc": 0.5, "phase": 1, "note": "x", "flag": True}]
        epochs.log_missing([*history, {"epoch": 2, "valid_acc": 0.75}])
    assert (tmp_path / "mlflow.db").is_file()
    saved = json.loads(record.read_text())
    assert saved["run_id"] == run.info.run_id and saved["stage"] == "train"
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    logged = client.get_run(run.info.run_id)
    assert logged.data.params == {"train.lr": "0.1"}
    assert logged.data.tags["dvc.stage"] == "train"
    assert logged.data.tags["psr.data_checksum"] == data_checksum(manifest)
    execution = logged.data.tags["psr.pipeline_run"]
    assert execution.startswith("proc-") and logged.info.run_name == f"train · {execution}"
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "psr-unit"
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "psr-unit").as_uri()
    history = client.get_metric_history(run.info.run_id, "valid_acc")
    # the step is the epoch number (1-based), as in history.csv; epoch 2 is logged once
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.75)]
    assert "flag" not in logged.data.metrics and "note" not in logged.data.metrics


def test_failed_stage_writes_no_record(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PSR_SHARED_ROOT", raising=False)
    record = tmp_path / "mlflow_run.json"
    with pytest.raises(RuntimeError), tracking.stage_run("prepare", "unit", record=record):
        raise RuntimeError("boom")
    assert not record.exists()


def test_unavailable_names_the_database_that_failed_and_nothing_else(tmp_path, monkeypatch):
    import sqlite3

    import optuna
    from mlflow.exceptions import MlflowException

    from pipeline import tuning

    assert tracking.unavailable(MlflowException("Registered Model 'x' not found")) is None
    assert tracking.unavailable(ValueError("database is locked")) is None
    locked = MlflowException("(sqlite3.OperationalError) database is locked")
    assert "the MLflow database" in tracking.unavailable(locked)

    db = tmp_path / "optuna.db"
    optuna.create_study(storage=tuning.open_storage(f"sqlite:///{db}"), study_name="s")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setenv("PSR_TRACKING_LOCK_TIMEOUT_S", "0.2")
    try:
        with pytest.raises(Exception) as err:
            optuna.create_study(storage=tuning.open_storage(f"sqlite:///{db}"), study_name="t")
    finally:
        holder.execute("COMMIT")
    line = tracking.unavailable(err.value)
    assert line is not None and line.startswith("the Optuna storage (tune.storage) stayed locked")


def test_credentials_reach_no_parameter_tag_record_or_message(monkeypatch, tmp_path):
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PSR_SHARED_ROOT", raising=False)
    storage = "postgresql://bob:hunter2@db/optuna"
    record = tmp_path / "mlflow_run.json"
    with tracking.stage_run(
        "tune", "unit", params={"tune": {"storage": storage}}, record=record, tags={"x": storage}
    ) as run:
        pass
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.params["tune.storage"] == logged.tags["x"] == "postgresql://bob:***@db/optuna"

    mlflow.set_tracking_uri("postgresql://bob:hunter2@db/mlflow")
    line = tracking.unavailable(MlflowException("(OperationalError) database is locked"))
    assert "hunter2" not in line and "postgresql://bob:***@db/mlflow" in line
    refused = MlflowException("to http://bob:hunter2@h:1 failed: Connection refused")
    mlflow.set_tracking_uri("http://bob:hunter2@h:1")
    assert "hunter2" not in tracking.unavailable(refused)


def test_an_http_tracking_uri_is_set_bare_with_its_credentials_as_basic_auth(monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # restored after the test
    assert tracking._credentials_to_env("http://bob:s%2Fcret@h:5000") == "http://h:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s/cret"
    assert tracking._credentials_to_env("http://h:5000") == "http://h:5000"
    assert tracking._credentials_to_env("sqlite:////x/m.db") == "sqlite:////x/m.db"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_bad_lock_timeout_is_named(monkeypatch, value):
    monkeypatch.setenv("PSR_TRACKING_LOCK_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="PSR_TRACKING_LOCK_TIMEOUT_S"):
        tracking.lock_timeout_s()


def _clear_identity_env(monkeypatch):
    for key in ("PREFECT__FLOW_RUN_ID", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(key, raising=False)


def test_an_execution_is_a_prefect_flow_run_else_this_process(monkeypatch):
    import os
    import sys

    from pipeline import identity

    _clear_identity_env(monkeypatch)
    monkeypatch.delitem(sys.modules, "prefect", raising=False)  # a stage never imports it
    ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert identity.execution_tags() == {"psr.pipeline_run": f"proc-{os.getpid()}-{ticks}"}
    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0f2c9a1e-5b7d-4c3a-9e8f-1a2b3c4d5e6f")
    tags = identity.execution_tags()
    assert tags == {
        "psr.pipeline_run": "prefect-0f2c9a1e-5b7d-4c3a-9e8f-1a2b3c4d5e6f",
        "prefect.flow_run_id": "0f2c9a1e-5b7d-4c3a-9e8f-1a2b3c4d5e6f",
        "dvc.exp_name": "lr-sweep",
        "dvc.exp_baseline_rev": "abc123",
    }
    assert identity.label(tags) == "lr-sweep"
    del tags["dvc.exp_name"]
    assert identity.label(tags) == "prefect-0f2c9a1e"


def test_stages_started_by_one_process_share_its_identity(tmp_path):
    """Like DVC: a launcher starts each stage through a shell with DVC_STAGE set; every stage
    names the launcher (its pid), whatever processes lie between."""
    import subprocess
    import sys

    from dvc_repo import REPO

    stage = f"{sys.executable} -c 'from pipeline import identity; print(identity.pipeline_run())'"
    launcher = (
        "import os, subprocess, sys\n"
        f"env = dict(os.environ, DVC_STAGE='x', PYTHONPATH={str(REPO)!r})\n"
        f"for _ in range(2): subprocess.run(['sh', '-c', {stage!r} + ' && true'], env=env)\n"
        "print(os.getpid())\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", launcher], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    first, second, pid = out
    assert first == second and first.startswith(f"dvc-{pid}-")


def _git(root, *args):
    import subprocess

    from dvc_repo import clean_env

    subprocess.run(["git", *args], cwd=root, env=clean_env(), check=True, capture_output=True)


def test_git_changes_and_the_params_digest(tmp_path):
    from dvc_repo import REPO

    from pipeline import identity
    from pipeline.params import set_params

    assert identity.git_changes(tmp_path) is None  # not a repository
    assert identity.source_tags(tmp_path) == {}
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "params.yaml")
    _git(tmp_path, "commit", "-q", "-m", "params")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")  # DVC writes it as the stages run
    clean = identity.source_tags(tmp_path)
    assert clean["psr.git.dirty"] == "false" and "psr.git.changes" not in clean
    digest = clean["psr.params_digest"]
    comments = (tmp_path / "params.yaml").read_text() + "# a comment changes nothing\n"
    (tmp_path / "params.yaml").write_text(comments)
    dirty = identity.source_tags(tmp_path)
    assert dirty["psr.git.dirty"] == "true" and dirty["psr.git.changes"] == "params.yaml"
    assert dirty["psr.params_digest"] == digest
    set_params(tmp_path / "params.yaml", ["train.seed=7"])
    (tmp_path / "notes.txt").write_text("untracked, not ignored")
    changed = identity.source_tags(tmp_path)
    assert changed["psr.git.changes"] == "params.yaml, notes.txt"
    assert changed["psr.params_digest"] != digest


def test_recorded_run_and_copied_params(monkeypatch, tmp_path, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PSR_SHARED_ROOT", raising=False)
    record = tmp_path / "reports" / "train" / "mlflow_run.json"
    with tracking.stage_run("train", "unit", params={"train": {"lr": 0.1}}, record=record) as run:
        pass
    assert tracking.recorded_run("evaluate") is None  # no record
    assert "reports/evaluate/mlflow_run.json not found" in caplog.text
    trained = tracking.recorded_run("train")
    assert trained.info.run_id == run.info.run_id
    with tracking.stage_run("evaluate", "unit", params={"evaluate": {"split": "test"}}) as ev:
        assert tracking.copy_params(trained) == {"train.lr": "0.1"}
    logged = mlflow.MlflowClient().get_run(ev.info.run_id).data.params
    assert logged == {"train.lr": "0.1", "evaluate.split": "test"}
    record.write_text(json.dumps({"run_id": "0" * 32}))
    assert tracking.recorded_run("train") is None
    assert f"names run {'0' * 32}, which sqlite:///" in caplog.text


@pytest.mark.integration
def _race(tmp_path: Path, code: str, start: float) -> list[str]:
    """``code`` in three processes that wait for the moment ``start``; their outputs."""
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PSR_"))}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONPATH": str(Path.cwd())}
    code = f"import time; from pipeline import tracking; {code.format(start=start)}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(w.communicate(timeout=300), w.returncode) for w in workers]
    for (_, err), code in results:
        assert code == 0, err[-3000:]
    return [out.strip() for (out, _), _ in results]


def test_stages_started_at_once_on_a_new_database_all_open_it_and_share_one_parent(tmp_path):
    """Three processes open the same new SQLite database at the same moment (a parallel
    `make ablate` or tune workers on a fresh clone): each gets the experiment, none fails in
    MLflow's table migrations, and all nest under one parent run (the ablation's)."""
    import time

    code = (
        "time.sleep(max(0, {start} - time.time())); print(tracking.use_experiment('race')); "
        "print(tracking.parent_run('race', 'psr.ablation', 'x', name='ablation'))"
    )
    outputs = _race(tmp_path, code, time.time() + 12)  # past every process's imports
    assert len(set(outputs)) == 1  # one experiment, one parent
