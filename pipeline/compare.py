"""``make compare``: the runs side by side, in the columns people compare.

``dvc exp show --only-changed`` prints every metric of every metrics file (per-class precision,
recall, F1, support ...) and every changed dependency hash, some 260 columns, so accuracy and
epochs hide behind "...". This runs ``dvc exp show`` with the headline metrics and a few
always-wanted parameters kept (:data:`METRICS`, :data:`PARAMS`), every other metric and every
dependency dropped, and the other parameters shown only where the runs differ
(``--only-changed``). Extra arguments go to ``dvc exp show`` (``--md``, ``-A``, ``--sort-by``,
``--csv`` ...); the command is printed first, to edit for other columns.

    python -m pipeline.compare [DVC EXP SHOW OPTIONS]     # make compare
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.paths import EVALUATE_METRICS, PARAMS_FILE, report_dir

#: Metrics file -> the keys compared. DVC prefixes a column with its file only when another
#: file has the same key (``best_valid_acc`` is in the tune and the train metrics).
METRICS = {
    report_dir("train") / "metrics.json": ("best_valid_acc",),  # the selected epoch's
    EVALUATE_METRICS: ("accuracy", "macro_f1"),  # test split, the headline (TTA) variant
}
#: Parameters shown even when every run has the same value.
PARAMS = (
    "model.name",
    "train.phase1.epochs",
    "train.phase2.epochs",
    "train.phase1.lrs",
    "train.phase2.lrs",
)
IDENTITY = ("Experiment", "Created")


def keep_pattern(metrics: dict[Path, tuple[str, ...]] = METRICS, params=PARAMS) -> str:
    """The columns kept whatever ``--drop`` and ``--only-changed`` say (DVC protects them)."""
    columns = [f"{re.escape(c)}$" for c in (*IDENTITY, *params)]
    for path, keys in metrics.items():
        prefix = re.escape(f"{path.as_posix()}:")
        columns += [f"({prefix})?{re.escape(key)}$" for key in keys]
    return "|".join(columns)


def drop_pattern(sections: list[str]) -> str:
    """Every column that is not a parameter of ``sections``: the metrics and the deps."""
    return rf"(?!({'|'.join(map(re.escape, sections))})\.)"


def sections(params_file: Path = PARAMS_FILE) -> list[str]:
    data = yaml.safe_load(params_file.read_text()) if params_file.is_file() else None
    if not isinstance(data, dict) or not data:
        raise SystemExit(f"{params_file}: no parameter sections (run in the repository root)")
    return list(data)


def command(extra: list[str], params_file: Path = PARAMS_FILE) -> list[str]:
    return [
        "dvc",
        "exp",
        "show",
        "--only-changed",
        "--drop",
        drop_pattern(sections(params_file)),
        "--keep",
        keep_pattern(),
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    dvc = command(argv)
    print(f"$ {shlex.join(dvc)}", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", *dvc]).returncode


if __name__ == "__main__":
    sys.exit(main())
