"""``make ablate``: the ablation's stale runs ``--jobs`` at a time, then its report.

    python -m pipeline.run_ablation [--jobs 2] [--threads N]

``dvc repro`` runs one stage at a time and holds the repository's lock while it runs, so two
arms cannot train side by side under it. On a CPU a small network trains faster as several
one-thread processes than as one process with every core (BENCHMARKS.md), so this:

1. brings the main pipeline's stages the runs read up to date (``dvc repro``);
2. asks ``dvc status`` which runs of ``ablation/dvc.yaml`` are stale, restores those that
   DVC's run-cache holds (``dvc repro --single-item``, as ``dvc repro`` would), and runs the
   others' command (``python -m pipeline.stages.ablate <arm> <seed>``) ``jobs`` at a time,
   each with ``threads`` torch threads (default: the usable cores shared out);
3. records each finished run in ``ablation/dvc.lock`` with ``dvc commit`` (one at a time), as
   ``dvc repro`` would have;
4. leaves the report to ``dvc repro ablation/dvc.yaml``, which finds every run up to date.

A run that fails leaves the others running; the command then exits 1 naming it, without the
report. An interrupted run continues from its last epoch next time (the stage resumes its
``last.pt``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.ablation import ABLATION_DVC, ABLATION_INPUTS, planned_runs, stage_name

#: One run's stage command (``ablation/dvc.yaml``'s), followed by its arm and seed.
STAGE_COMMAND = (sys.executable, "-m", "pipeline.stages.ablate")
_print_lock = threading.Lock()
_commit_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
_stopping = threading.Event()
_start_lock = threading.Lock()


def _tool(name: str) -> str:
    """A console script of this environment (``dvc``), else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def stale_runs(runs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The planned runs whose DVC stage is not up to date (all of them on a first run)."""
    out = subprocess.run(
        [_tool("dvc"), "status", "--json", ABLATION_DVC], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"dvc status {ABLATION_DVC} failed:\n{out.stderr.strip()}")
    changed = set(json.loads(out.stdout or "{}"))
    return [(arm, seed) for arm, seed in runs if stage_name(arm, seed) in changed]


def cached_runs(names: list[str]) -> list[str]:
    """The stages among ``names`` whose outputs DVC's cache holds for their current inputs
    (its run-cache, or the lock file's entry): ``dvc repro`` restores those without running."""
    import logging

    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    found = []
    dvc_log = logging.getLogger("dvc")
    level, dvc_log.level = dvc_log.level, logging.WARNING  # the dry check logs "is cached"
    try:
        with Repo() as repo:
            for name in names:
                (stage,) = repo.stage.collect(name)
                stage.save_deps()  # the input hashes the run-cache is keyed by
                try:
                    repo.stage_cache.restore(stage, dry=True)
                except RunCacheNotFoundError:
                    continue
                found.append(name)
    finally:
        dvc_log.level = level
    return found


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_one(arm: str, seed: int, threads: int, position: str) -> bool:
    """One run's stage command, its output prefixed with the run, then ``dvc commit``."""
    name = stage_name(arm, seed)
    tag = f"[{arm}-seed{seed}]"
    # as under dvc repro: the stage's MLflow run names this runner as its pipeline execution
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", DVC_STAGE=name)
    env["DVC_ROOT"] = os.getcwd()
    command = [*STAGE_COMMAND, arm, str(seed)]
    with _start_lock:  # a stop either sees this process or keeps it from starting
        if _stopping.is_set():
            return False
        _say(f"Running stage '{name}' ({position}):")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            process_group=0,  # a stop reaches every process the stage started
        )
        _running.add(process)
    with process:
        for line in process.stdout:
            _say(f"{tag} {line.rstrip()}")
        _running.discard(process)
    if process.returncode != 0:
        _say(f"{tag} failed (exit {process.returncode}); the next make ablate runs it again")
        return False
    with _commit_lock:  # dvc commit takes the repository's lock
        commit = subprocess.run(
            [_tool("dvc"), "commit", "--force", name], capture_output=True, text=True
        )
    if commit.returncode != 0:
        _say(f"{tag} dvc commit failed:\n{commit.stderr.strip()}")
        return False
    _say(f"{tag} done, recorded in {ABLATION_DVC.replace('.yaml', '.lock')}")
    return True


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a flow's or a scheduler's stop) ends the runs as Ctrl-C does."""
    raise KeyboardInterrupt


def _stop_all(grace_s: float = 10) -> None:
    """TERM to every running stage's process group, KILL to those still there after
    ``grace_s``; no queued run starts after it."""
    with _start_lock:
        _stopping.set()
        running = list(_running)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in running:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(0.1)


def run(runs: list[tuple[str, int]], jobs: int, threads: int | None = None) -> int:
    """Train the stale ones of ``runs`` (arm, seed) and make the report; 1 if a run failed."""
    _stopping.clear()
    subprocess.run([_tool("dvc"), "repro", *ABLATION_INPUTS], check=True)
    todo = stale_runs(runs)
    cached = cached_runs([stage_name(*r) for r in todo])
    if cached:
        _say(f"ablation: {len(cached)} run(s) restored from DVC's cache, not trained")
        subprocess.run([_tool("dvc"), "repro", "--single-item", *cached], check=True)
        todo = [r for r in todo if stage_name(*r) not in cached]
    threads = threads or max(1, usable_cores() // max(1, min(jobs, len(todo))))
    _say(
        f"ablation: {len(todo)} of {len(runs)} runs to train, {jobs} at a time with "
        f"{threads} thread(s) each"
    )
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        done = list(
            pool.map(
                lambda item: _run_one(*item[1], threads, f"{item[0] + 1} of {len(todo)}"),
                enumerate(todo),
            )
        )
    except BaseException:  # Ctrl-C, SIGTERM, or a runner error: no run goes on alone
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_all()
        _say("ablation: stopped; an interrupted run continues from its last epoch next time")
        raise
    pool.shutdown()
    failed = [stage_name(*r) for r, ok in zip(todo, done, strict=True) if not ok]
    if failed:
        _say(f"ablation: {len(failed)} run(s) failed (their lines above): {', '.join(failed)}")
        return 1
    subprocess.run([_tool("dvc"), "repro", ABLATION_DVC], check=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run_ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default cores / jobs)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--jobs and --threads must be at least 1")
    from pipeline.params import load_params

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(planned_runs(load_params()), args.jobs, args.threads)
    except KeyboardInterrupt:
        return 130
    except subprocess.CalledProcessError as err:
        print(f"{' '.join(map(str, err.cmd))} failed (exit {err.returncode})", file=sys.stderr)
        return err.returncode


if __name__ == "__main__":
    sys.exit(main())
