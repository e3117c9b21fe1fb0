"""make ablate's runner: stale runs side by side, each recorded in dvc.lock, then the report.

A scratch DVC repository with the main pipeline's input stages as no-ops and an
``ablation/dvc.yaml`` of the real one's shape; a fake stage command stands in for training
(the real one runs in tests/pipeline/test_e2e.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import run_ablation
from pipeline.ablation import ABLATION_INPUTS

DVC = str(Path(sys.executable).parent / "dvc")
RUNS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
FAKE_STAGE = """
import glob, json, os, sys, time
arm, seed = sys.argv[1], sys.argv[2]
start = time.time()
open(f"{arm}-{seed}.started", "w").close()
while len(glob.glob("*.started")) < 2:  # waits for a second run: only runs side by side end
    if time.time() - start > 60:
        sys.exit("no second run started beside this one")
    time.sleep(0.05)
if arm == "bad":
    sys.exit("bad arm")
out = f"reports/ablation/runs/{arm}-seed{seed}"
os.makedirs(out, exist_ok=True)
with open(f"{out}/metrics.json", "w") as f:
    json.dump({"start": start, "end": time.time(), "threads": os.environ["OMP_NUM_THREADS"]}, f)
"""


def _repo(root: Path, arms: list[str]) -> None:
    inputs = "\n".join(
        f"  {s}:\n    cmd: echo {s} > {s}.txt\n    outs: [{s}.txt]" for s in ABLATION_INPUTS
    )
    (root / "dvc.yaml").write_text(f"stages:\n{inputs}\n")
    (root / "params.yaml").write_text(f"ablate:\n  arms: {json.dumps(arms)}\n  seeds: [0, 1]\n")
    (root / "ablation").mkdir()
    (root / "ablation/dvc.yaml").write_text(
        textwrap.dedent(
            """\
            vars:
              - ../params.yaml:ablate
            stages:
              arm:
                matrix:
                  arm: ${ablate.arms}
                  seed: ${ablate.seeds}
                wdir: ..
                cmd: python -m pipeline.stages.ablate ${item.arm} ${item.seed}
                deps: [sr_pretrain.txt]
                outs:
                  - reports/ablation/runs/${item.arm}-seed${item.seed}
              report:
                wdir: ..
                cmd: ls reports/ablation/runs > report.txt
                deps: [reports/ablation/runs]
                outs: [report.txt]
            """
        )
    )
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True, env=env)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    fake = tmp_path / "fake_stage.py"
    fake.write_text(FAKE_STAGE)
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setattr(run_ablation, "STAGE_COMMAND", (sys.executable, str(fake)))
    return root


def _status() -> dict:
    out = subprocess.run([DVC, "status", "--json", "ablation/dvc.yaml"], capture_output=True)
    return json.loads(out.stdout or "{}")


def test_runs_side_by_side_are_recorded_and_the_report_follows(scratch, capsys):
    _repo(scratch, ["a", "b"])
    assert run_ablation.run(RUNS, jobs=2, threads=3) == 0
    out = capsys.readouterr().out
    assert "ablation: 4 of 4 runs to train, 2 at a time with 3 thread(s) each" in out
    assert "Running stage 'ablation/dvc.yaml:arm@b-1' (4 of 4):" in out
    runs = [json.loads(p.read_text()) for p in scratch.glob("reports/ablation/runs/*/metrics.json")]
    assert len(runs) == 4 and {r["threads"] for r in runs} == {"3"}
    assert _status() == {}  # every run and the report are up to date for dvc repro
    assert (scratch / "report.txt").read_text().split() == [
        "a-seed0",
        "a-seed1",
        "b-seed0",
        "b-seed1",
    ]

    assert run_ablation.run(RUNS, jobs=2) == 0  # nothing stale: nothing trains
    assert "ablation: 0 of 4 runs to train" in capsys.readouterr().out

    kept = scratch / "reports/ablation/runs/b-seed1/metrics.json"
    before = kept.read_text()
    shutil.rmtree(kept.parent)  # DVC's cache has it: restored, not trained again
    assert run_ablation.run(RUNS, jobs=2) == 0
    out = capsys.readouterr().out
    assert "ablation: 1 run(s) restored from DVC's cache, not trained" in out
    assert "ablation: 0 of 4 runs to train" in out
    assert kept.read_text() == before and _status() == {}


def test_a_failed_run_is_named_and_leaves_the_others_recorded_and_no_report(scratch, capsys):
    _repo(scratch, ["a", "bad"])
    runs = [("a", 0), ("bad", 0), ("a", 1)]
    assert run_ablation.run(runs, jobs=2, threads=1) == 1
    out = capsys.readouterr().out
    assert "[bad-seed0] bad arm" in out  # its own output, prefixed with the run
    assert "ablation: 1 run(s) failed (their lines above): ablation/dvc.yaml:arm@bad-0" in out
    stale = _status()
    assert "ablation/dvc.yaml:arm@bad-0" in stale and "ablation/dvc.yaml:report" in stale
    assert "ablation/dvc.yaml:arm@a-0" not in stale and "ablation/dvc.yaml:arm@a-1" not in stale
    assert not (scratch / "report.txt").exists()


SLOW_STAGE = """
import os, sys, time
open(f"{sys.argv[1]}-{sys.argv[2]}.pid", "w").write(str(os.getpid()))
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_stop_ends_every_running_stage_process(scratch, tmp_path):
    """SIGTERM (a flow's stop, Ctrl-C alike) reaches the runs, which have process groups of
    their own, and no queued run starts after it."""
    import signal
    import time

    _repo(scratch, ["slow"])
    slow = tmp_path / "slow_stage.py"
    slow.write_text(SLOW_STAGE)
    code = (
        "import signal, sys\n"
        "from pipeline import run_ablation as r\n"
        f"r.STAGE_COMMAND = ({sys.executable!r}, {str(slow)!r})\n"
        "signal.signal(signal.SIGTERM, r._interrupt)\n"
        "sys.exit(r.run([('slow', 0), ('slow', 1), ('slow', 2)], jobs=2, threads=1))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(run_ablation.__file__).parents[1]))
    runner = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=scratch,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    pid_files = [scratch / "slow-0.pid", scratch / "slow-1.pid"]
    deadline = time.time() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert time.time() < deadline and runner.poll() is None, runner.stdout.read()
        time.sleep(0.2)
    pids = [int(p.read_text()) for p in pid_files]
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=60)
    assert runner.returncode != 0
    assert "ablation: stopped" in out
    deadline = time.time() + 15
    while any(_alive(pid) for pid in pids):
        assert time.time() < deadline, "a stage process outlived the stop"
        time.sleep(0.2)
    assert "arm@slow-2" not in out  # the queued run never started


def test_jobs_and_threads_must_be_positive(capsys):
    for bad in (["--jobs", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            run_ablation.main(bad)
        assert "--jobs and --threads must be at least 1" in capsys.readouterr().err
