"""psr-pipeline's retries against a real (temporary) Prefect server: a stage that fails once is
retried and completes; a stage past its timeout is not retried.

Each stage counts its own attempts in a file: the task runs the server records arrive through
Prefect's event stream, which drops events on a loaded machine, so the test does not read them.
Neither stage is a GPU stage: a GPU stage's concurrency slot is one more call to the server,
which failed here on a loaded machine (ConnectError); the ``gpu`` tags and retry counts per
stage are unit-tested in test_team.py."""

from __future__ import annotations

import subprocess

import pytest
from dvc_repo import BIN, clean_env

from pipeline import flows

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def attempt(name: str, then: str) -> str:
    """A stage command: append a line to ``<name>.tries``, then run ``then``."""
    return (
        f"import pathlib, sys, time; p = pathlib.Path('{name}.tries'); "
        f"p.open('a').write('x\\n'); tries = len(p.read_text().split()); {then}"
    )


def test_a_failed_stage_is_retried_and_a_timed_out_one_is_not(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    env = clean_env()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True, env=env)
    fail_once = attempt(
        "download", "open('raw.txt', 'w').write('raw'); sys.exit(0 if tries > 1 else 3)"
    )
    hang = attempt("prepare", "time.sleep(120)")
    monkeypatch.setitem(flows.RETRIES, "prepare", 2)  # retries it could use, but must not
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        f'  download:\n    cmd: python -c "{fail_once}"\n    outs: [raw.txt]\n'
        f'  prepare:\n    cmd: python -c "{hang}"\n    deps: [raw.txt]\n'
    )
    with prefect_test_harness(server_startup_timeout=300):
        state = flows.psr_pipeline(
            repo=str(tmp_path), stages=["download", "prepare"], timeouts={"prepare": 3},
            return_state=True,
        )  # fmt: skip
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, TimeoutError) and "ran past its timeout of 3 s" in str(error)
    assert (tmp_path / "download.tries").read_text() == "x\nx\n"  # failed once, retried, done
    assert (tmp_path / "raw.txt").read_text() == "raw"
    assert (tmp_path / "prepare.tries").read_text() == "x\n"  # timed out: not retried
