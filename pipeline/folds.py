"""Every fold of the k-fold validation protocol (RAF-DB's official 5-fold): one DVC experiment
per fold, then the test metrics across folds.

    python -m pipeline.folds [--folds 0 1 2 3 4] [--name rafdb]       (make folds)

Fold k is ``dvc exp run -S prepare.fold=k -n <name>-fold<k>``: the whole pipeline, validation
on fold k of the seeded stratified split of train, the same official test set. Each fold's test
metrics go to ``reports/folds/fold<k>.json`` as soon as its experiment ends; a rerun skips the
folds already there for the same params.yaml (an interrupted run continues). The summary (per
fold, mean, std, min, max, median) goes to ``reports/folds/summary.json`` and ``summary.md``.
The official code runs the folds the same way and leaves the cross-fold numbers to the reader.
params.yaml gets its own ``prepare.fold`` back at the end; the workspace holds the last fold's
outputs, and every fold stays in ``dvc exp show``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import PARAMS_FILE, Params, load_params, read_yaml
from pipeline.paths import EVALUATE_METRICS, REPORTS_DIR

FOLDS_DIR = REPORTS_DIR / "folds"
#: The test metrics gathered per fold.
SCORES = ("accuracy", "macro_f1", "uar")


def check_folds(params: Params, folds: Sequence[int]) -> None:
    """ValueError unless validation is one fold of ``prepare.n_folds`` and ``folds`` exist."""
    cfg = params.prepare
    if cfg.dataset == "ferplus":
        raise ValueError("FER+ has an official validation split: there are no folds to run")
    if cfg.valid_fraction is not None or cfg.valid_per_class is not None:
        raise ValueError(
            "params.yaml: prepare.valid_fraction / valid_per_class replace the folds: unset them"
        )
    outside = [k for k in folds if not 0 <= k < cfg.n_folds]
    if outside or not folds:
        raise ValueError(f"folds {list(folds)}: each must be in 0..{cfg.n_folds - 1}")


def params_digest(path: Path = PARAMS_FILE) -> str:
    """params.yaml without ``prepare.fold``: what makes two folds parts of one protocol run."""
    from psr.fileio import config_digest

    data = read_yaml(path.read_text(encoding="utf-8"))
    data.get("prepare", {}).pop("fold", None)
    return config_digest(data)


def run_fold(fold: int, name: str, digest: str, dvc: str = "dvc") -> dict[str, Any]:
    """Run fold ``fold`` as a DVC experiment and keep its test metrics."""
    from psr.fileio import read_json, write_json

    experiment = f"{name}-fold{fold}"
    # ++: set the key whether or not params.yaml spells it out
    command = [dvc, "exp", "run", "-S", f"++prepare.fold={fold}", "-n", experiment]
    subprocess.run(command, check=True)
    metrics = read_json(EVALUATE_METRICS)
    row = {"fold": fold, "experiment": experiment, "params_digest": digest}
    row |= {key: float(metrics[key]) for key in SCORES}
    row["num_samples"] = int(metrics["num_samples"])
    write_json(FOLDS_DIR / f"fold{fold}.json", row)
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold rows -> mean, std, min, max and median of every score."""
    summary: dict[str, Any] = {"folds": [r["fold"] for r in rows], "per_fold": list(rows)}
    for key in SCORES:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "median": float(np.median(values)),
        }
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| fold | experiment | accuracy | macro-F1 | UAR |", "|---|---|---|---|---|"]
    for r in summary["per_fold"]:
        lines.append(
            f"| {r['fold']} | {r['experiment']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{r['uar']:.4f} |"
        )
    for stat in ("mean", "std", "median"):
        cells = " | ".join(f"{summary[k][stat]:.4f}" for k in SCORES)
        lines.append(f"| {stat} | | {cells} |")
    return "\n".join(lines) + "\n"


def run_folds(folds: Sequence[int], name: str, dvc: str = "dvc") -> dict[str, Any]:
    """Every fold not yet done for this params.yaml, then the summary; params.yaml keeps its
    own ``prepare.fold``."""
    from psr.fileio import read_json, write_json, write_text

    params = load_params()
    check_folds(params, folds)
    digest = params_digest()
    original = PARAMS_FILE.read_text(encoding="utf-8")
    rows = []
    try:
        for fold in folds:
            done = FOLDS_DIR / f"fold{fold}.json"
            if done.is_file() and read_json(done).get("params_digest") == digest:
                print(f"fold {fold}: done before ({done}), skipped", flush=True)
                rows.append(read_json(done))
                continue
            print(f"fold {fold}: dvc exp run -S prepare.fold={fold}", flush=True)
            rows.append(run_fold(fold, name, digest, dvc))
    finally:
        PARAMS_FILE.write_text(original, encoding="utf-8")
    summary = summarise(rows)
    write_json(FOLDS_DIR / "summary.json", summary)
    write_text(FOLDS_DIR / "summary.md", markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.folds", description=__doc__)
    parser.add_argument("--folds", type=int, nargs="+", help="default: all of prepare.n_folds")
    parser.add_argument("--name", help="experiment name prefix (default: the dataset name)")
    args = parser.parse_args(argv)
    try:
        params = load_params()
        folds = args.folds if args.folds is not None else list(range(params.prepare.n_folds))
        summary = run_folds(folds, args.name or params.dataset_name)
    except (ValueError, FileNotFoundError) as err:
        print(f"folds: error: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"folds: {' '.join(err.cmd)} failed (exit {err.returncode})", file=sys.stderr)
        return 1
    acc = summary["accuracy"]
    print(f"test accuracy over folds {summary['folds']}: {acc['mean']:.4f} +- {acc['std']:.4f}")
    print(f"{FOLDS_DIR / 'summary.md'}:\n{markdown(summary)}", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
