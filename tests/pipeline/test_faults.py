"""Fault injection: stage processes killed with SIGKILL at chosen points (the failpoints of
:mod:`psr.faults`) and what the next run makes of it. Real processes, real MLflow on SQLite,
real Optuna, in the tiny workspace of ``conftest.py``; docs/reliability.md lists what each
test proves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import servers  # tests/pipeline/servers.py
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state.get("state_dict", state)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _runs(root: Path, stage: str) -> list:
    import mlflow

    from pipeline import tracking

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.experiment_name("tiny"))
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tracking.TAG_STAGE}` = '{stage}'"
    )


def test_train_stage_killed_mid_epoch_resumes_bit_identical(workspace, stage):
    """SIGKILL in the middle of epoch 2 of 2: the rerun continues ``last.pt`` of epoch 1 and ends
    with the bytes of an uninterrupted run; the killed run's MLflow run is closed as KILLED."""
    best = workspace / "models/psr/best.pt"
    _ok(stage("train"))
    reference = _tensors(best)
    history = (workspace / "reports/train/history.csv").read_text().splitlines()

    killed = stage("train", failpoint="train.step:9")  # 6 steps an epoch
    assert killed.returncode == KILLED, killed.stderr[-4000:]
    assert (workspace / "models/resume/train/last.pt").is_file()
    running = [r for r in _runs(workspace, "train") if r.info.status == "RUNNING"]
    assert len(running) == 1

    resumed = _ok(stage("train"))
    assert "resuming models/resume/train/last.pt after epoch 1" in resumed.stderr
    assert _same(reference, _tensors(best))
    again = (workspace / "reports/train/history.csv").read_text().splitlines()
    assert len(again) == len(history) == 3  # header + 2 epochs, epoch 1 from the killed run
    assert not (workspace / "models/resume/train").exists()  # published: the next run is fresh
    closed = {r.info.run_id: r for r in _runs(workspace, "train")}[running[0].info.run_id]
    assert closed.info.status == "KILLED"
    assert "ended without closing the run" in closed.data.tags["psr.end_reason"]


def test_train_stage_starts_fresh_when_the_configuration_changed(workspace, stage):
    """A ``last.pt`` of another configuration is not continued: the stage says why."""
    from pipeline.params import set_params

    assert stage("train", failpoint="train.epoch_saved").returncode == KILLED
    params = workspace / "params.yaml"
    original = params.read_text()
    try:
        set_params(params, ["train.seed=7"])
        fresh = _ok(stage("train"))
    finally:
        params.write_text(original)
    assert "not resuming models/resume/train/last.pt" in fresh.stderr
    assert "the training config differs in ['seed']" in fresh.stderr
    assert "resuming models/resume/train/last.pt after" not in fresh.stderr


def _registry(root: Path):
    import mlflow

    return mlflow.MlflowClient(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        registry_uri=f"sqlite:///{root / 'mlflow.db'}",
    )


def test_register_killed_mid_alias_move_or_before_validation_is_finished_next_run(workspace, stage):
    """A kill between two alias moves leaves the journal: the next run completes the move. A
    kill right after registering leaves a version ``validation=pending``: the next run deletes
    it. ``champion`` never names an unvalidated version."""
    import json

    from pipeline.params import load_params, set_params

    params = workspace / "params.yaml"
    original = params.read_text()
    set_params(params, ["register.baseline_margin=null", "register.model_name=psr-faults"])
    try:
        if not (workspace / "models/psr/best.pt").is_file():
            _ok(stage("train"))
        _ok(stage("evaluate"))
        client = _registry(workspace)

        killed = stage("register", failpoint="register.alias_set:1")
        assert killed.returncode == KILLED, killed.stderr[-4000:]
        model = client.get_registered_model("psr-faults")
        assert model.aliases == {"challenger": 1}  # champion not moved yet
        assert json.loads(model.tags["psr.alias_journal"])["target"]["champion"] == "1"

        killed = stage("register", failpoint="register.version_created")
        assert killed.returncode == KILLED, killed.stderr[-4000:]
        assert "completed the interrupted alias move" in killed.stderr  # before it died
        model = client.get_registered_model("psr-faults")
        assert model.aliases == {"challenger": 1, "champion": 1}
        assert "psr.alias_journal" not in model.tags
        assert client.get_model_version("psr-faults", "2").tags["psr.validation"] == "pending"

        _ok(stage("register"))
        document = json.loads((workspace / "reports/registry.json").read_text())
        assert document["recovered"] == ["deleted v2: an interrupted run left it unvalidated"]
        model = client.get_registered_model("psr-faults")
        versions = client.search_model_versions("name = 'psr-faults'")
        assert sorted(int(v.version) for v in versions) == [1, 3]
        assert model.aliases == {"champion": 1, "challenger": 3}
        assert document["version"] == "3" and load_params().registry.model_name == "psr-faults"
        tags = client.get_model_version("psr-faults", "3").tags  # its ONNX twin, checked
        assert tags["psr.onnx_model_uri"] == document["onnx_model_uri"]
        assert document["onnx_verified_max_abs_diff"] <= 1e-4
    finally:
        params.write_text(original)


def test_tune_stage_killed_mid_trial_fails_it_and_retries_its_values(workspace, stage):
    """A worker killed in trial 2 leaves it RUNNING; the next run marks it FAIL with the reason,
    trains its values again and finishes exactly ``tune.n_trials`` trials, none repeated."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params

    killed = stage("tune", failpoint="train.step:8")  # 3 steps a trial
    assert killed.returncode == KILLED, killed.stderr[-4000:]
    os.chdir(workspace)
    try:
        params = load_params()
        _, name = tuning.study_for(params)
        storage = tuning.open_storage(params.tune.storage)
        study = optuna.load_study(study_name=name, storage=storage)
        assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE", "RUNNING"]

        _ok(stage("tune"))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        os.chdir(REPO)
    died = trials[2]
    assert died.state.name == "FAIL"
    assert "died during the trial" in died.user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert retry.params == died.params and retry.state.name == "COMPLETE"
    finished = [t for t in trials if t.state in tuning.FINISHED]
    assert len(finished) == params.tune.n_trials
    values = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(values)) == len(values)


class _Lock:
    """An exclusive lock on a SQLite file, held by a thread until :meth:`release`."""

    def __init__(self, db: Path):
        import threading

        self.db, self.taken, self.done = db, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()
        assert self.taken.wait(30)

    def _hold(self) -> None:
        import sqlite3

        connection = sqlite3.connect(self.db, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        self.taken.set()
        self.done.wait(600)
        connection.execute("COMMIT")
        connection.close()

    def release(self) -> None:
        self.done.set()
        self.thread.join(30)


def _one_line_error(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode == 3, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(f"stage {stage}: error:")]
    return line


def test_a_locked_tracking_database_is_waited_for_then_named_in_one_line(workspace, stage):
    """A lock shorter than ``PSR_TRACKING_LOCK_TIMEOUT_S`` is waited out; a longer one ends the
    stage with one line that names the database and what to do."""
    import threading

    db = workspace / "mlflow.db"
    lock = _Lock(db)
    threading.Timer(4, lock.release).start()
    _ok(stage("priors", PSR_TRACKING_LOCK_TIMEOUT_S="60"))  # waited ~4 s
    assert lock.done.is_set()

    lock = _Lock(db)
    try:
        failed = stage("priors", PSR_TRACKING_LOCK_TIMEOUT_S="1")
    finally:
        lock.release()
    line = _one_line_error(failed, "priors")
    assert f"the MLflow database sqlite:///{db} stayed locked for 1 s" in line
    assert "PSR_TRACKING_LOCK_TIMEOUT_S" in line


def _train_until_an_epoch_is_saved(root: Path, env: dict[str, str]) -> subprocess.Popen:
    """The train stage started in ``root``, returned once its first ``last.pt`` exists."""
    import time

    last = root / "models/resume/train/last.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.train"],
        cwd=root,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


def _finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stderr = process.communicate(timeout=300)[1]
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def test_training_survives_a_tracking_database_locked_mid_run(workspace, stage, stage_env):
    """The database locked after epoch 1: the stage stops with one line, keeping its training;
    the rerun continues it and ends bit-identical to an uninterrupted run."""

    best, last = workspace / "models/psr/best.pt", workspace / "models/resume/train/last.pt"
    _ok(stage("train"))
    reference = _tensors(best)
    process = _train_until_an_epoch_is_saved(workspace, stage_env(PSR_TRACKING_LOCK_TIMEOUT_S="1"))
    lock = _Lock(workspace / "mlflow.db")
    try:
        result = _finished(process)
    finally:
        lock.release()
    assert "stayed locked" in _one_line_error(result, "train")
    assert last.is_file()  # the training so far

    resumed = _ok(stage("train"))
    assert "resuming models/resume/train/last.pt after epoch" in resumed.stderr
    assert _same(reference, _tensors(best))


def test_an_unreachable_tracking_server_is_named_in_one_line(workspace, stage):
    port = servers.free_port()  # nothing listens on it
    failed = stage(
        "priors",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    line = _one_line_error(failed, "priors")
    assert f"the MLflow server http://127.0.0.1:{port} is not reachable" in line


def test_a_stage_dies_with_the_process_that_started_it(workspace, tmp_path, stage_env):
    """SIGKILL to the parent (what killing ``dvc repro`` does): the stage goes too, so it can
    never rewrite outputs behind the next run's back."""
    import time

    pid_file = tmp_path / "stage.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'pipeline.stages.train'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    env = stage_env()
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=workspace, env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    time.sleep(3)  # the stage is running (importing, training)
    assert _running(child)
    parent.kill()
    parent.wait()
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the stage outlived its parent"


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_prepare_and_sr_pretrain_killed_keep_their_outputs_and_rerun_identically(workspace, stage):
    """A kill mid-decode or mid-training leaves the previous outputs as they were; the rerun
    deletes the killed writer's hidden folder and writes the same bytes."""
    import json

    prepared = workspace / "data/prepared/tiny"
    before = json.loads((prepared / "manifest.json").read_text())["checksums"]
    killed = stage("prepare", failpoint="prepare.chunk_decoded")
    assert killed.returncode == KILLED, killed.stderr[-4000:]
    assert json.loads((prepared / "manifest.json").read_text())["checksums"] == before
    assert [p.name for p in prepared.parent.iterdir() if p.name.startswith(".tiny.tmp-")]
    _ok(stage("prepare"))
    assert json.loads((prepared / "manifest.json").read_text())["checksums"] == before
    assert sorted(p.name for p in prepared.parent.iterdir()) == ["tiny"]

    weights = workspace / "models/sr/sr_x2.pt"
    _ok(stage("sr_pretrain"))  # in a process like the ones below (threads)
    reference = _tensors(weights)
    killed = stage("sr_pretrain", failpoint="sr_pretrain.step:2")
    assert killed.returncode == KILLED, killed.stderr[-4000:]
    assert _same(reference, _tensors(weights))
    _ok(stage("sr_pretrain"))
    assert _same(reference, _tensors(weights))


def test_two_tune_workers_one_killed_finish_the_exact_budget(workspace, run_tune_workers, stage):
    """Worker 1 dies in a trial while worker 2 goes on; the stage (worker 0) then fails the dead
    trial, retries its values and tops the study up to exactly ``tune.n_trials``."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params, set_params

    params_file = workspace / "params.yaml"
    original = params_file.read_text()
    set_params(params_file, ["tune.n_trials=6", "tune.storage=journal:two-workers.journal"])
    try:
        done = run_tune_workers([{"PSR_FAILPOINT": "train.step:5"}, {}])
        assert [code for code, _ in done] == [KILLED, 0], done[1][1][-3000:]
        _ok(stage("tune"))
        os.chdir(workspace)
        params = load_params()
        _, name = tuning.study_for(params)
        storage = tuning.open_storage(params.tune.storage)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        os.chdir(REPO)
        params_file.write_text(original)
    failed = [t for t in trials if t.state.name == "FAIL"]
    died = [t for t in failed if "died during the trial" in t.user_attrs.get("fail_reason", "")]
    assert len(died) == 1
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == died[0].number]
    assert retry.state.name == "COMPLETE" and retry.params == died[0].params
    finished = [t for t in trials if t.state in tuning.FINISHED]
    assert len(finished) == 6 and not [t for t in trials if t.state.name == "RUNNING"]
    values = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(values)) == len(values)


def test_training_survives_the_tracking_server_stopping_mid_run(workspace, stage, stage_env):
    """A real MLflow server killed after epoch 1: the stage stops with one line, keeping its
    training; with the server back, the rerun continues it to the uninterrupted bytes."""

    best, last = workspace / "models/psr/best.pt", workspace / "models/resume/train/last.pt"
    _ok(stage("train"))
    reference = _tensors(best)
    port = servers.free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    server = servers.mlflow_server(workspace, port, stage_env())
    try:
        process = _train_until_an_epoch_is_saved(workspace, stage_env(**env))
        os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
        server.wait()
        result = _finished(process)
        assert f"the MLflow server {uri} is not reachable" in _one_line_error(result, "train")
        assert last.is_file()

        server = servers.mlflow_server(workspace, port, stage_env())
        resumed = _ok(stage("train", **env))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
    assert "resuming models/resume/train/last.pt after epoch" in resumed.stderr
    assert _same(reference, _tensors(best))
