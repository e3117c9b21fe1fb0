"""pipeline.flows without a Prefect server: the command runner (DVC's hint, timeouts, stopping
the commands of a flow that ends early), the flows' limits, and prefect.toml's settings."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from dvc_repo import BIN, clean_env  # tests/pipeline/dvc_repo.py

from pipeline import flows

REPO = Path(__file__).resolve().parents[2]
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def run_log(monkeypatch, caplog) -> pytest.LogCaptureFixture:
    """The flows' run logger, outside a flow run: a plain logger caplog reads."""
    caplog.set_level(logging.INFO, logger="psr-flow-test")
    monkeypatch.setattr(flows, "get_run_logger", lambda: logging.getLogger("psr-flow-test"))
    return caplog


def _dvc_repo(root: Path) -> Path:
    """A git + DVC repository with two one-line stages."""
    env = clean_env()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True, env=env)
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: python -c \"open('a.txt', 'w').write('a')\"\n    outs: [a.txt]\n"
        "  b:\n    cmd: python -c \"open('b.txt', 'w').write('b')\"\n    deps: [a.txt]\n"
        "    outs: [b.txt]\n"
    )
    return root


def test_dvc_git_hint_leaves_the_log_and_is_returned_once_per_stage(tmp_path, run_log):
    root = _dvc_repo(tmp_path)
    to_track = []
    for stage in ("a", "b"):  # each changes dvc.lock: the real DVC prints its hint each time
        to_track += flows.stream([str(BIN / "dvc"), "repro", "--single-item", stage], root)
    assert "Running stage 'b'" in run_log.text
    assert "To track the changes" not in run_log.text and "autostage" not in run_log.text
    assert sorted(set(to_track)) == [".gitignore", "dvc.lock"]
    run_log.clear()
    flows.log_git_hint(to_track)
    assert run_log.messages == [f"{flows.GIT_HINT[0]} git add .gitignore dvc.lock"]


def test_a_logged_command_shows_no_password(tmp_path, run_log):
    """psr-tune passes its storage URL on the worker's command line; the log masks its password."""
    url = "postgresql+psycopg://optuna:s3cret@db-host:5432/optuna"
    flows.stream([sys.executable, "-c", "pass", "--storage", url], tmp_path)
    assert "s3cret" not in run_log.text
    assert "--storage postgresql+psycopg://optuna:***@db-host:5432/optuna" in run_log.text


def test_a_command_past_its_timeout_is_stopped(tmp_path, run_log):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timeout of 0\.5 s"):
        flows.stream(SLEEP, tmp_path, timeout_s=0.5)
    assert time.monotonic() - start < 30
    assert not flows._RUNNING


def test_a_timeout_stops_the_commands_under_the_command_too(tmp_path, run_log):
    """``dvc repro`` runs a stage's command as its child; that child holds the output pipe, so
    stopping ``dvc`` alone would leave the runner waiting for the stage to end by itself."""
    pid_file = tmp_path / "child.pid"
    child = "import os, time; open('child.pid', 'w').write(str(os.getpid())); time.sleep(120)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        flows.stream([sys.executable, "-c", parent], tmp_path, timeout_s=2)
    assert time.monotonic() - start < 30  # not the child's 120 s
    assert not _running(int(pid_file.read_text()))


def _running(pid: int) -> bool:
    """A zombie is not running: an orphan waits there until PID 1 reaps it, which some
    containers' init never does."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_flow_that_ends_early_stops_the_commands_of_its_threads(tmp_path, run_log):
    failures: list[BaseException] = []

    def task() -> None:
        try:
            flows.stream(SLEEP, tmp_path)
        except BaseException as err:  # the stopped command: a non-zero status
            failures.append(err)

    thread = threading.Thread(target=task)
    with pytest.raises(KeyboardInterrupt), flows.stops_its_commands():
        thread.start()
        while not flows._RUNNING:
            time.sleep(0.05)
        raise KeyboardInterrupt  # what a flow timeout or a failed sibling task does
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "exited with status -15" in str(failures[0])


def test_timeouts_per_stage_and_their_parameter():
    assert flows.timeout_for("train") == flows.TIMEOUT_S["train"]
    assert flows.timeout_for("train", {"train": 172800}) == 172800
    assert flows.timeout_for("ablation/dvc.yaml:arm@psr-0", {"train": 5}) == 5
    assert flows.timeout_for("ablation/dvc.yaml:report") == flows.TIMEOUT_S["ablation_report"]
    assert set(flows.STAGES) <= set(flows.TIMEOUT_S)
    flows.check_timeouts({"tune": 3600})
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian'\]"):
        flows.check_timeouts({"trian": 3600})
    with pytest.raises(ValueError, match="must be > 0"):
        flows.check_timeouts({"train": 0})


def test_flows_have_timeouts_and_gpu_stages_are_known():
    for flow in (flows.psr_pipeline, flows.psr_tune, flows.psr_ablate):
        assert flow.timeout_seconds == flows.FLOW_TIMEOUT_S
        assert "timeouts" in flow.parameters.properties
    assert max(flows.TIMEOUT_S.values()) < flows.FLOW_TIMEOUT_S
    assert [s for s in flows.STAGES if flows.uses_gpu(s)] == [
        "sr_pretrain", "backbone", "tune", "train", "evaluate"
    ]  # fmt: skip
    assert flows.uses_gpu("ablation/dvc.yaml:arm@psr-0")
    assert not flows.uses_gpu("ablation/dvc.yaml:report")


def test_prefect_toml_is_the_settings_of_a_plain_shell(tmp_path):
    """`prefect` in the repository root, no PREFECT_* variables: the project's server and
    PREFECT_HOME, and nothing written to ~/.prefect."""
    home, work = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    work.mkdir()
    (work / "prefect.toml").write_text((REPO / "prefect.toml").read_text())
    env = {k: v for k, v in clean_env().items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    shown = subprocess.run(
        [str(BIN / "prefect"), "config", "view", "--show-sources"],
        cwd=work,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PREFECT_API_URL='http://127.0.0.1:4200/api' (from prefect.toml)" in shown
    assert "PREFECT_HOME='.prefect' (from prefect.toml)" in shown
    assert "PREFECT_SERVER_EPHEMERAL_ENABLED='False' (from prefect.toml)" in shown
    assert "PREFECT_SERVER_ANALYTICS_ENABLED='False' (from prefect.toml)" in shown
    assert list(home.iterdir()) == []


def test_the_install_step_says_what_it_does():
    shown = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "venv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "installing the project and its dependencies" in shown
    assert shown.index("installing the project") < shown.index("pip install")
