"""Stage ``ablation_report``: the ablation's runs -> one table and one plot, never typed.

Reads ``reports/ablation/runs/<arm>-seed<k>/`` for every arm and seed of params.yaml's
``ablate`` section and writes ``reports/ablation/summary/``: ``results.md`` (mean ± standard
deviation over seeds per arm, then accuracy per source face-size bucket), ``runs.csv`` (every run),
``summary.csv``, ``by_resolution.csv`` and ``accuracy_by_resolution.png``; the same files go to
the ablation's MLflow parent run with each arm's means as metrics. ``python -m pipeline.readme``
copies results.md into the README.
"""

from __future__ import annotations

import logging
import sys

import mlflow
import pandas as pd

from pipeline import ablation, tracking
from pipeline.params import Params
from pipeline.stages.common import stage_main
from psr.data.synthetic import TRUE_LABEL

STAGE = "ablation_report"
OUT = ablation.SUMMARY_DIR
RESULTS_FILE, PLOT_FILE = ablation.RESULTS_FILE, ablation.PLOT_FILE
TRUTH_PLOT_FILE = OUT / f"accuracy_by_resolution_vs_{TRUE_LABEL}.png"
#: Columns of the table: metric key -> heading (mean ± std over seeds).
COLUMNS = {
    "accuracy": "test accuracy",
    "macro_f1": "macro-F1",
    "uar": "UAR",
    "ece": "ECE",
    "best_valid_acc": "valid accuracy",
}
COMMAND = "make ablate"
log = logging.getLogger(__name__)


def breakdown_column(params: Params) -> str | None:
    """The sidecar column the arms' evaluations broke accuracy down by: ``evaluate.breakdown_by``
    (``auto``: the face size on synthetic data, whose ``generation.csv`` the arms were given)."""
    from psr.jobs.evaluate import AUTO, AUTO_BREAKDOWN

    column = params.evaluate.breakdown_by
    if column == AUTO:
        return AUTO_BREAKDOWN if params.download.synthetic else None
    return column


def read_runs(params: Params) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Every run's metrics (one row each), their accuracy per group of the evaluation's
    breakdown column (one row per run and group), and the skipped arms with their reasons."""
    from psr.fileio import read_json
    from psr.report import breakdown_stem

    rows, groups, skipped = [], [], {}
    column = breakdown_column(params)
    for arm, seed in ablation.planned_runs(params):
        folder = ablation.run_dir(arm, seed)
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(
                f"{folder / 'metrics.json'} is missing: run the ablation's arms first ({COMMAND})"
            )
        metrics = read_json(folder / "metrics.json")
        if "skipped" in metrics:
            skipped[arm] = metrics["skipped"]
            continue
        rows.append({"arm": arm, **metrics})
        if column:
            table = pd.read_csv(folder / "evaluation" / f"{breakdown_stem(column)}.csv")
            # the headline variant's column, and the same scored against the rendered expression
            accuracy = next(c for c in table.columns if c.startswith("accuracy_"))
            names = {accuracy: "accuracy", f"{accuracy}_vs_{TRUE_LABEL}": "truth_accuracy"}
            table = table.rename(columns=names)
            kept = ["group", "count", *(c for c in names.values() if c in table.columns)]
            groups.append(table[kept].assign(arm=arm, seed=seed, order=range(len(table))))
    runs = pd.DataFrame(rows)
    by_group = pd.concat(groups, ignore_index=True) if groups else pd.DataFrame()
    return runs, by_group, skipped


def _spread(values: pd.Series) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one seed)."""
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm, in run order: seeds, mean and std of every metric, time and size."""
    rows = []
    for arm, group in runs.groupby("arm", sort=False):
        row = {"arm": arm, "seeds": len(group)}
        for key in (*COLUMNS, "train_seconds"):
            row[f"{key}_mean"], row[f"{key}_std"] = _spread(group[key])
        row["parameters"] = int(group["parameters"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_groups(by_group: pd.DataFrame) -> pd.DataFrame:
    """Per arm and group: mean and std over seeds of the group's accuracy (``mean``, ``std``)
    and, where the runs have it, of its accuracy against the rendered expression
    (``truth_mean``, ``truth_std``)."""
    rows = []
    for (arm, group), part in by_group.groupby(["arm", "group"], sort=False):
        row = {
            "arm": arm,
            "group": group,
            "order": int(part["order"].iloc[0]),
            "count": int(part["count"].iloc[0]),
        }
        row["mean"], row["std"] = _spread(part["accuracy"])
        if "truth_accuracy" in part:
            row["truth_mean"], row["truth_std"] = _spread(part["truth_accuracy"])
        rows.append(row)
    table = pd.DataFrame(rows)
    arms = list(dict.fromkeys(by_group["arm"]))
    table["arm_order"] = table["arm"].map(arms.index)
    return table.sort_values(["arm_order", "order"]).drop(columns=["arm_order", "order"])


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def markdown(
    summary: pd.DataFrame, groups: pd.DataFrame, skipped: dict[str, str], params: Params
) -> str:
    """results.md: how it was made, the per-arm table and the per-resolution table."""
    seeds = ", ".join(map(str, params.ablate.seeds))
    lines = [
        f"Generated by `{COMMAND}` (`python -m pipeline.stages.ablation_report`) from the runs in "
        f"`{ablation.RUNS_DIR}`: dataset `{params.dataset_name}`, seeds {seeds}, the same "
        "budget for every arm; mean ± standard deviation over seeds, test split.",
        "",
        "| arm | what it adds | " + " | ".join(COLUMNS.values()) + " | train min | params |",
        "|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    by_arm = summary.set_index("arm")
    for arm in params.ablate.arms:  # the paper's order, skipped arms in their place
        if arm in skipped:
            lines.append(
                f"| `{arm}` | {ablation.ARMS[arm].description} | skipped: {skipped[arm]} |"
            )
            continue
        r = by_arm.loc[arm]
        cells = [_pm(r[f"{k}_mean"], r[f"{k}_std"]) for k in COLUMNS]
        lines.append(
            f"| `{arm}` | {ablation.ARMS[arm].description} | "
            + " | ".join(cells)
            + f" | {r['train_seconds_mean'] / 60:.1f} | {r['parameters'] / 1e6:.3f} M |"
        )
    if not groups.empty:
        column = breakdown_column(params)
        lines += _groups_table(groups, column, "mean", f"Test accuracy by source {column}")
        lines += ["", f"![accuracy by {column}]({PLOT_FILE.name})"]
        if "truth_mean" in groups:
            title = (
                f"The same predictions scored against the expression each face was rendered "
                f"with (the generator's `{TRUE_LABEL}`; the crowd's majority label differs for "
                f"small and faint faces, which draw neutral votes), by source {column}"
            )
            lines += _groups_table(groups, column, "truth_mean", title)
            lines += ["", f"![accuracy against {TRUE_LABEL}]({TRUTH_PLOT_FILE.name})"]
    return "\n".join(lines) + "\n"


def _groups_table(groups: pd.DataFrame, column: str, mean: str, title: str) -> list[str]:
    """Markdown lines: one row per arm, one cell (mean ± std over seeds) per group."""
    std = mean.replace("mean", "std")
    order = list(dict.fromkeys(groups["group"]))
    counts = groups.drop_duplicates("group").set_index("group")["count"]
    lines = [
        "",
        f"{title} (equal-count buckets, smallest first):",
        "",
        "| arm | " + " | ".join(f"{g} (n={int(counts[g])})" for g in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for arm, part in groups.groupby("arm", sort=False):
        cells = part.set_index("group").reindex(order)
        lines.append(
            f"| `{arm}` | "
            + " | ".join(_pm(m, s) for m, s in zip(cells[mean], cells[std], strict=True))
            + " |"
        )
    return lines


def run(params: Params) -> None:
    from psr.figures import plot_groups_by_arm
    from psr.fileio import atomic_directory

    ablation.check_arms(params)
    runs, by_group, skipped = read_runs(params)
    if runs.empty:
        raise ValueError(f"every arm of the ablation was skipped: {skipped}")
    summary = summarize(runs)
    groups = summarize_groups(by_group) if not by_group.empty else pd.DataFrame()
    with atomic_directory(OUT, marker="summary.csv") as tmp:
        runs.to_csv(tmp / "runs.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        (tmp / "results.md").write_text(markdown(summary, groups, skipped, params), "utf-8")
        if not groups.empty:
            groups.to_csv(tmp / "by_resolution.csv", index=False)
            column = breakdown_column(params)
            plot_groups_by_arm(groups, column, tmp / PLOT_FILE.name)
            if "truth_mean" in groups:
                plot_groups_by_arm(
                    groups,
                    column,
                    tmp / TRUTH_PLOT_FILE.name,
                    measure="truth",
                    against=TRUE_LABEL,
                )
    log.info("ablation: %d runs of %d arms -> %s", len(runs), len(summary), OUT)
    tracking.use_experiment(params.dataset_name)
    for parent in runs["parent_run_id"].drop_duplicates():
        with mlflow.start_run(run_id=parent):
            mlflow.log_metrics(
                {
                    f"{r['arm']}.{k}_{s}": float(r[f"{k}_{s}"])
                    for r in summary.to_dict("records")
                    for k in COLUMNS
                    for s in ("mean", "std")
                }
            )
            mlflow.log_artifacts(str(OUT), artifact_path="ablation")


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
