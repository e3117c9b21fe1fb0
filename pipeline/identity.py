"""Which pipeline execution a run belongs to, and the state of the sources it ran from.

DVC runs every stage as its own process, so nothing in one stage's process says which other
stage runs came from the same ``dvc repro``. The identity of an execution is therefore taken
from whoever started the stages, outermost first:

1. a Prefect flow run: ``prefect-<flow run id>`` (Prefect's runtime in the flow's own process;
   ``PREFECT__FLOW_RUN_ID``, which Prefect's workers set and the stages inherit, elsewhere);
2. the DVC process that runs the stages (``dvc repro``, ``dvc exp run``, a queued experiment's
   executor): DVC sets ``DVC_STAGE`` for each stage command it starts, so that process is the
   first ancestor without it; ``dvc-<its pid>-<its start time>``;
3. otherwise this process (stages called in-process or by hand): ``proc-<pid>-<start time>``.

(The start time is in clock ticks since boot, which with the pid names one process.)

A DVC experiment's name (``DVC_EXP_NAME``, set by ``dvc exp run``) and its baseline commit are
recorded beside it. The sources: the git commit, whether the workspace differs from it (DVC's
lock files aside: DVC writes them while the pipeline runs) and a digest of ``params.yaml`` as the
stages validate it (every default filled in), which differs whenever the parameters differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.paths import PARAMS_FILE
from pipeline.workspace import workspace

#: Set by Prefect for the processes of a flow run; the runtime reads it too.
PREFECT_FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"
#: Set by DVC for every stage command it runs (``dvc/stage/run.py``).
DVC_STAGE_ENV = "DVC_STAGE"
#: Set by ``dvc exp run`` for the stages of an experiment (``dvc/repo/experiments/queue``).
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"
DVC_EXP_BASELINE_ENV = "DVC_EXP_BASELINE_REV"

TAG_PIPELINE_RUN = "psr.pipeline_run"
TAG_PREFECT_FLOW_RUN = "prefect.flow_run_id"
TAG_DVC_EXP_NAME = "dvc.exp_name"
TAG_DVC_EXP_BASELINE = "dvc.exp_baseline_rev"
TAG_GIT_DIRTY = "psr.git.dirty"
TAG_GIT_CHANGES = "psr.git.changes"
TAG_PARAMS_DIGEST = "psr.params_digest"
#: The changed paths listed in a tag, at most (then "... and N more").
MAX_LISTED_CHANGES = 20
#: Files DVC itself writes while the stages run: not a change to what runs.
DVC_WRITTEN = frozenset({"dvc.lock"})


def flow_run_id() -> str | None:
    """The Prefect flow run this process is part of, or None."""
    if "prefect" in sys.modules:  # the flow's own process (never imported just to ask)
        from prefect.runtime import flow_run

        return flow_run.get_id()
    return os.environ.get(PREFECT_FLOW_RUN_ENV) or None


def _launcher():
    """``(process, kind)``: the process that runs the stages (see the module docstring)."""
    import psutil

    me = psutil.Process()
    if DVC_STAGE_ENV not in os.environ:
        return me, "proc"
    try:
        for ancestor in me.parents():
            if DVC_STAGE_ENV not in ancestor.environ():
                return ancestor, "dvc"
    except psutil.Error:  # an environment we may not read: the nearest we know of
        pass
    return me.parent() or me, "dvc"


def _start_ticks(process) -> int:
    """When ``process`` started, in clock ticks since boot (Linux: ``/proc/<pid>/stat``); the
    same in every process that asks. A wall-clock start time is not: Linux derives it from the
    boot time, which moves when the clock is stepped or a virtual machine is resumed."""
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after "pid (comm)"
    except (OSError, IndexError, ValueError):  # no procfs (macOS): psutil's start time
        return round(process.create_time() * 100)


def pipeline_run() -> str:
    """The identity of the pipeline execution this process belongs to."""
    if flow := flow_run_id():
        return f"prefect-{flow}"
    process, kind = _launcher()
    return f"{kind}-{process.pid}-{_start_ticks(process)}"


def execution_tags() -> dict[str, str]:
    """The execution's identity, its Prefect flow run and its DVC experiment, as tags."""
    tags = {TAG_PIPELINE_RUN: pipeline_run()}
    if flow := flow_run_id():
        tags[TAG_PREFECT_FLOW_RUN] = flow
    if name := os.environ.get(DVC_EXP_NAME_ENV):
        tags[TAG_DVC_EXP_NAME] = name
    if baseline := os.environ.get(DVC_EXP_BASELINE_ENV):
        tags[TAG_DVC_EXP_BASELINE] = baseline
    return tags


def label(tags: dict[str, str]) -> str:
    """A short readable name for the execution of :func:`execution_tags`: the DVC experiment's
    name, else the identity (a Prefect flow run's id cut to 8 characters)."""
    if name := tags.get(TAG_DVC_EXP_NAME):
        return name
    if flow := tags.get(TAG_PREFECT_FLOW_RUN):
        return f"prefect-{flow[:8]}"
    return tags[TAG_PIPELINE_RUN]


def git_changes(cwd: Path | None = None) -> list[str] | None:
    """Paths that differ from HEAD (modified, staged, deleted, or untracked and not ignored),
    DVC's lock files excepted; None outside a git repository."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=normal"],
            cwd=cwd or workspace(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    entries = iter(out.split("\0"))
    changed = []
    for entry in entries:
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            next(entries, None)  # -z lists a rename's source as the next entry
        if Path(path).name not in DVC_WRITTEN:
            changed.append(path)
    return changed


def params_digest(path: Path = PARAMS_FILE) -> str:
    """A digest of ``params.yaml`` as the stages read it (validated, every default filled in):
    the same for files that differ only in comments, layout or spelled-out defaults."""
    from pipeline.params import load_params
    from psr.fileio import config_digest

    return config_digest(load_params(path).model_dump(mode="json", by_alias=True))


def source_tags(cwd: Path | None = None) -> dict[str, str]:
    """Whether the workspace differs from its git commit (and where), and the params digest
    (when the workspace has a ``params.yaml``)."""
    tags = {}
    changes = git_changes(cwd)
    if changes is not None:
        tags[TAG_GIT_DIRTY] = "true" if changes else "false"
        if changes:
            listed = changes[:MAX_LISTED_CHANGES]
            more = len(changes) - len(listed)
            tags[TAG_GIT_CHANGES] = ", ".join(listed) + (f" ... and {more} more" if more else "")
    params = (cwd or workspace()) / PARAMS_FILE
    if params.is_file():
        tags[TAG_PARAMS_DIGEST] = params_digest(params)
    return tags
