"""MLflow conventions: shared database location, tags, run records, epoch logging."""

import json
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


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_bad_lock_timeout_is_named(monkeypatch, value):
    monkeypatch.setenv("PSR_TRACKING_LOCK_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="PSR_TRACKING_LOCK_TIMEOUT_S"):
        tracking.lock_timeout_s()
