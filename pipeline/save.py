"""``make save``: record the current run in git, so that DVC's comparisons can see it.

``dvc metrics diff``, ``dvc plots diff`` and ``dvc exp show`` compare the workspace with
commits, and a commit holds a run only through its ``dvc.lock`` (the hashes that find its
metrics and plots in DVC's cache). A fresh clone has none, so after ``make run`` every HEAD
cell is "-" ("DVC failed to load some metrics for following revisions: 'HEAD'"). This commits
``dvc.lock`` with what the run was made from: ``dvc.yaml``, ``params.yaml`` and the stages'
changed code dependencies. It refuses, saying why, when nothing ran, when the pipeline is not
up to date (the lock would describe other files) and when HEAD already records the run.

    python -m pipeline.save [--message TEXT]    # make save [MSG=...]
    python -m pipeline.save --hint              # the line `make run` ends with

The project's own repository never commits ``dvc.lock``: the verb is for users' clones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.paths import EVALUATE_METRICS, PARAMS_FILE, report_dir

LOCK = Path("dvc.lock")
PIPELINE = Path("dvc.yaml")
DVC_FILES = (PIPELINE, LOCK, PARAMS_FILE)
TRAIN_METRICS = report_dir("train") / "metrics.json"
#: (file, key, label): the headline numbers a commit message names.
HEADLINE = (
    (EVALUATE_METRICS, "accuracy", "test accuracy"),
    (EVALUATE_METRICS, "macro_f1", "macro-F1"),
    (TRAIN_METRICS, "best_valid_acc", "valid accuracy"),
)
HINT = (
    "This run is not in git yet: `make save` commits it (dvc.lock, params.yaml), so that "
    "`dvc metrics diff`, `dvc plots diff` and `make compare` compare later runs with it."
)


class SaveError(RuntimeError):
    """Why there is nothing (consistent) to save."""


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SaveError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def is_git_repository(root: Path) -> bool:
    try:
        inside = git(root, "rev-parse", "--is-inside-work-tree", check=False).stdout.strip()
    except FileNotFoundError:  # no git at all
        return False
    return inside == "true"


def flatten(data: object, prefix: str = "") -> dict[str, object]:
    """``{"train": {"phase1": {"epochs": 2}}}`` -> ``{"train.phase1.epochs": 2}``."""
    if not isinstance(data, dict) or not data:
        return {prefix: data} if prefix else {}
    flat: dict[str, object] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_params(before: str | None, after: str) -> dict[str, tuple[object, object]]:
    """Dotted key -> (committed value, current value) for every parameter that differs."""
    old = flatten(yaml.safe_load(before) or {}) if before is not None else {}
    new = flatten(yaml.safe_load(after) or {})
    missing = object()
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    }


def headline(root: Path) -> list[tuple[str, float]]:
    """(label, value) of the run's headline metrics that its reports hold."""
    numbers = []
    for path, key, label in HEADLINE:
        file = root / path
        if file.is_file():
            value = json.loads(file.read_text()).get(key)
            if isinstance(value, int | float):
                numbers.append((label, float(value)))
    return numbers


def message(metrics: list[tuple[str, float]], params: dict[str, tuple[object, object]]) -> str:
    """A subject naming the metrics and changed params, a body listing every change."""
    scores = ", ".join(f"{label} {value:.4f}" for label, value in metrics) or "no metrics yet"
    shown = [f"{key}={new}" for key, (_, new) in list(params.items())[:3]]
    if len(params) > 3:
        shown.append(f"+{len(params) - 3} more")
    subject = f"Run: {scores} ({', '.join(shown) if shown else 'params.yaml as committed'})"
    body = [f"{key}: {old} -> {new}" for key, (old, new) in params.items()]
    body.append(
        "Saved by `make save` (pipeline/save.py): dvc.lock finds this run's outputs in DVC's "
        "cache, so `dvc metrics diff`, `dvc plots diff` and `make compare` compare with it."
    )
    return subject + "\n\n" + "\n".join(body) + "\n"


def stale_stages(root: Path) -> list[str]:
    """Stages of dvc.yaml whose dependencies or outputs changed since dvc.lock was written."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", str(PIPELINE)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SaveError(f"dvc status failed: {result.stderr.strip()[-2000:]}")
    return sorted(json.loads(result.stdout or "{}"))


def lock_deps(root: Path) -> list[str]:
    """Every dependency path of the stages in dvc.lock (code, data, params files)."""
    stages = (yaml.safe_load((root / LOCK).read_text()) or {}).get("stages", {})
    return sorted({d["path"] for s in stages.values() for d in s.get("deps", []) if "path" in d})


def unsaved_paths(root: Path, paths: list[str]) -> list[str]:
    """Those of ``paths`` (files or folders) that differ from HEAD or are untracked, and that
    git does not ignore."""
    status = git(root, "status", "--porcelain", "-z", "--untracked-files=all", "--", *paths)
    entries = status.stdout.split("\0")
    changed, i = [], 0
    while i < len(entries):
        entry = entries[i]
        if entry:
            changed.append(entry[3:])
            if entry[0] in "RC":  # a rename is followed by its source path
                i += 1
        i += 1
    return sorted(changed)


def committed(root: Path, path: Path) -> str | None:
    result = git(root, "show", f"HEAD:{path.as_posix()}", check=False)
    return result.stdout if result.returncode == 0 else None


def to_save(root: Path) -> list[str]:
    """The paths a commit of this run needs, after checking that there is a run to save."""
    if not is_git_repository(root):
        raise SaveError(f"{root} is not a git repository: `git init` and commit the code first")
    if not (root / LOCK).is_file():
        raise SaveError(
            "dvc.lock: none yet, nothing has run: `make run` (dvc repro) or `dvc exp run` first"
        )
    stale = stale_stages(root)
    if stale:
        raise SaveError(
            f"the pipeline is not up to date ({', '.join(stale)}: changed since they ran, "
            "`dvc status` says what): `make run` first, so that dvc.lock describes the files "
            "it saves"
        )
    paths = unsaved_paths(root, [p.as_posix() for p in DVC_FILES] + lock_deps(root))
    if not paths:
        head = git(root, "rev-parse", "--short", "HEAD").stdout.strip()
        raise SaveError(
            f"nothing to save: HEAD ({head}) already records this run (dvc.lock, params.yaml "
            "and the stages' code are committed)"
        )
    return paths


def save(root: Path, text: str | None = None) -> str:
    """Commit the run in ``root``; its short commit hash."""
    paths = to_save(root)
    params_file = root / PARAMS_FILE
    params = changed_params(committed(root, PARAMS_FILE), params_file.read_text())
    git(root, "add", "--", *paths)
    git(root, "commit", "--quiet", "-m", text or message(headline(root), params), "--", *paths)
    return git(root, "rev-parse", "--short", "HEAD").stdout.strip()


def hint(root: Path) -> str | None:
    """The reminder `make run` ends with, when dvc.lock or params.yaml is not committed."""
    if not (root / LOCK).is_file() or not is_git_repository(root):
        return None
    return HINT if unsaved_paths(root, [p.as_posix() for p in DVC_FILES]) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message", "-m", help="the commit message (default: names the run)")
    parser.add_argument("--hint", action="store_true", help="only say whether a run is unsaved")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.hint:
        line = hint(root)
        if line:
            print(line)
        return 0
    try:
        commit = save(root, args.message)
    except SaveError as error:
        print(f"make save: {error}", file=sys.stderr)
        return 1
    subject = git(root, "log", "-1", "--format=%s").stdout.strip()
    print(f"Saved as {commit}: {subject}")
    print("Compare later runs with it: dvc metrics diff, dvc plots diff -o plots, make compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
