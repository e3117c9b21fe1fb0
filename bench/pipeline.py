"""Wall time of ``dvc repro`` of the embedded default from a fresh copy, and of the no-op rerun.

    .venv/bin/python bench/pipeline.py [--keep DIR]

Copies the repository's tracked and untracked-but-not-ignored files (no outputs, no dvc.lock) into
a temporary git repository, runs ``dvc repro`` twice and prints the times, the test accuracy and
the machine's load average (the machine is shared: read the times with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def fresh_copy(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if name.endswith("dvc.lock") or not (REPO / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    env = _env()
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "bench"], cwd=dest, check=True, env=env)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PSR_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        DO_NOT_TRACK="1",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    return env


def timed_repro(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, check=True, env=_env())
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="psr-bench-")
    root = args.keep or Path(tmp.name) / "repo"
    root.mkdir(parents=True)
    try:
        fresh_copy(root)
        load_before = os.getloadavg()[0]
        first = timed_repro(root)
        second = timed_repro(root)
        metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
        sizes = (root / "reports/evaluate/accuracy_by_face_size.csv").read_text().splitlines()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"{'measure':<34}{'value':>10}")
    print(f"{'dvc repro, fresh copy (s)':<34}{first:>10.1f}")
    print(f"{'dvc repro, nothing to do (s)':<34}{second:>10.2f}")
    print(f"{'test accuracy (8 classes)':<34}{metrics['accuracy']:>10.4f}")
    print(f"{'macro-F1 / UAR':<34}{metrics['macro_f1']:>10.4f} / {metrics['uar']:.4f}")
    print(f"{'chance (1/8)':<34}{0.125:>10.4f}")
    group, _, accuracy = sizes[1].split(",")[:3]  # group,count,accuracy_tta: smallest faces
    print(f"{'accuracy, smallest faces ' + group:<34}{float(accuracy):>10.4f}")
    print(f"{'load average before / after':<34}{load_before:>5.1f} / {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
