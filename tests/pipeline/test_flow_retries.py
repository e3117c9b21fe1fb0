"""psr-pipeline's retries against a real (temporary) Prefect server: a stage that fails once is
retried and completes; a stage past its timeout is not retried; GPU stages carry the gpu tag."""

from __future__ import annotations

import subprocess

import pytest
from dvc_repo import BIN, clean_env

from pipeline import flows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAIL_ONCE = (
    "import pathlib, sys; p = pathlib.Path('tried'); tried = p.exists(); p.touch(); "
    "open('raw.txt', 'w').write('raw'); sys.exit(0 if tried else 3)"
)


def test_a_failed_stage_is_retried_and_a_timed_out_one_is_not(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    env = clean_env()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        f'  download:\n    cmd: python -c "{FAIL_ONCE}"\n    outs: [raw.txt]\n'
        '  train:\n    cmd: python -c "import time; time.sleep(120)"\n    deps: [raw.txt]\n'
    )
    with prefect_test_harness(server_startup_timeout=300):
        state = flows.psr_pipeline(
            repo=str(tmp_path), stages=["download", "train"], timeouts={"train": 3},
            return_state=True,
        )  # fmt: skip
        with get_client(sync_client=True) as client:
            run_id = state.state_details.flow_run_id
            tasks = {t.name: t for t in client.read_task_runs() if t.flow_run_id == run_id}
    assert state.is_failed()
    assert tasks["download"].run_count == 2 and tasks["download"].state.is_completed()
    assert tasks["train"].run_count == 1 and tasks["train"].state.is_failed()  # not retried
    assert "ran past its timeout of 3 s" in tasks["train"].state.message
    assert tasks["train"].tags == [flows.GPU_TAG] and tasks["download"].tags == []
