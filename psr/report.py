"""Evaluation outputs: metrics, per-sample predictions, figures and one self-contained HTML report.

Written into a directory, all at once (a temporary sibling directory renamed into place):

- ``metrics.json``: the first result's flat metrics (what ``dvc metrics show`` reads; with
  ``<score>_ci_low``/``_ci_high``, 95 % bootstrap intervals), plus ``variant``, the other results
  (e.g. without TTA) nested under their names, and the baselines (``majority_baseline``,
  ``chance_baseline``);
- ``predictions.csv``: ``id,actual,predicted`` (class names, DVC's confusion template) and
  ``p_<class>``;
- ``calibration.csv``: confidence vs accuracy per non-empty bin (a DVC line plot);
- ``confusion_counts.png``, ``confusion_normalized.png``, ``reliability.png``, ``per_class.png``,
  ``branches.png``, ``mistakes.png`` (when images are given), ``accuracy_by_<column>.png`` and
  ``.csv`` (when a breakdown is given);
- ``report.html``: provenance (model, run, commit, training configuration: what the caller
  knows), the metric tables (TTA beside the plain pass, with intervals, against the baselines)
  and every figure embedded as base64, one file to share.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from psr.data.synthetic import TRUE_LABEL
from psr.evaluate import (
    EvalResult,
    accuracy_breakdown,
    evaluate_variants,
    load_sidecar,
    match_sidecar,
)
from psr.figures import (
    plot_branches,
    plot_breakdown,
    plot_confusion,
    plot_mistakes,
    plot_per_class,
    plot_reliability,
)
from psr.fileio import atomic_directory
from psr.metrics import (
    BASELINE_METRICS,
    BOOTSTRAP_RESAMPLES,
    HEADLINE,
    calibration_bins,
    chance_baseline,
)


def breakdown_stem(column: str) -> str:
    """File stem of the accuracy breakdown by ``column`` (``accuracy_by_face_size``)."""
    return "accuracy_by_" + re.sub(r"[^\w.-]+", "_", column)


def predictions_table(result: EvalResult) -> pd.DataFrame:
    """One row per sample: ``id``, ``actual``, ``predicted`` (names) and ``p_<class>``."""
    names = np.asarray(result.class_names)
    table = pd.DataFrame(
        {"id": result.ids, "actual": names[result.labels], "predicted": names[result.preds]}
    )
    for k, name in enumerate(result.class_names):
        table[f"p_{name}"] = np.round(result.probs[:, k], 6)
    return table


def calibration_table(result: EvalResult) -> pd.DataFrame:
    """Per non-empty confidence bin: bounds, count, mean confidence and accuracy."""
    bins = calibration_bins(result.labels, result.probs)
    filled = bins.count > 0
    return pd.DataFrame(
        {
            "bin_lower": bins.edges[:-1][filled],
            "bin_upper": bins.edges[1:][filled],
            "count": bins.count[filled],
            "confidence": bins.confidence[filled],
            "accuracy": bins.accuracy[filled],
        }
    )


def metrics_document(
    results: Mapping[str, EvalResult],
    baselines: Mapping[str, Mapping[str, float | int | str]] | None = None,
    definitions: Mapping[str, Mapping[str, float | int | str]] | None = None,
) -> dict:
    """The first result's metrics at the top level (``variant`` names it), the others nested;
    ``<name>_baseline`` for each of ``baselines`` (``majority``: always answering the most
    frequent training class; ``chance``: a uniform random guess); ``test_definitions``: the
    headline scores under each FER+ test-set definition."""
    (first_name, first), *others = results.items()
    document: dict = {"variant": first_name, **first.metrics}
    for name, result in others:
        document[name] = dict(result.metrics)
    for name, scores in (baselines or {}).items():
        document[f"{name}_baseline"] = dict(scores)
    if definitions:
        document["test_definitions"] = {k: dict(v) for k, v in definitions.items()}
    return document


def definition_summary(result: EvalResult, used: bool) -> dict[str, float | int | str]:
    """One test-set definition's row: its size and headline scores, and whether it is the run's."""
    summary: dict[str, float | int | str] = {"num_samples": int(result.metrics["num_samples"])}
    summary |= {k: float(result.metrics[k]) for k in ("accuracy", "macro_f1", "uar")}
    return summary | {"headline": "yes" if used else "no"}


def _table_html(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _cell(value: float | int | str) -> str:
    return value if isinstance(value, str) else _fmt(value)


def _interval(metrics: Mapping[str, float | int], score: str) -> str:
    """``[low, high]`` of a score's bootstrap interval, or empty without one."""
    if f"{score}_ci_low" not in metrics:
        return ""
    return f"[{_fmt(metrics[f'{score}_ci_low'])}, {_fmt(metrics[f'{score}_ci_high'])}]"


def _headline_table(results: Mapping[str, EvalResult]) -> str:
    """Every variant side by side (TTA beside the plain pass), each score with its 95 %
    interval, and the difference of the first two variants."""
    names = list(results)
    header = ["metric"]
    for n in names:
        header += [n, f"{n} 95 % CI"]
    if len(names) > 1:
        header.append(f"{names[0]} − {names[1]}")
    rows = []
    for m in HEADLINE:
        row = [m]
        for n in names:
            row += [_fmt(results[n].metrics[m]), _interval(results[n].metrics, m)]
        if len(names) > 1:
            row.append(f"{results[names[0]].metrics[m] - results[names[1]].metrics[m]:+.4f}")
        rows.append(row)
    samples = [str(results[n].metrics["num_samples"]) for n in names]
    rows.append(["samples", *[c for s in samples for c in (s, "")], *([""] * (len(names) > 1))])
    return _table_html(rows, header)


def _baseline_table(
    name: str, result: EvalResult, baselines: Mapping[str, Mapping[str, float | int | str]]
) -> str:
    """The model's scores (with intervals) above what the baselines score on the same images."""
    what = {
        "majority": lambda b: (
            f"majority class: always {b['class']!r} (train split's most frequent)"
        ),
        "chance": lambda b: f"chance: a uniform guess among {b['classes']} classes",
    }
    rows = [
        [f"model ({name})"]
        + [
            f"{_fmt(result.metrics[m])} {_interval(result.metrics, m)}".strip()
            for m in BASELINE_METRICS
        ]
    ]
    for key, scores in baselines.items():
        label = what[key](scores) if key in what else key
        rows.append([label] + [_fmt(float(scores[m])) for m in BASELINE_METRICS])
    return _table_html(rows, ["", *BASELINE_METRICS])


def render_html(
    results: Mapping[str, EvalResult],
    figures: dict[str, Path],
    *,
    title: str,
    info: Mapping[str, str],
    provenance: Mapping[str, str] | None = None,
    baselines: Mapping[str, Mapping[str, float | int | str]] | None = None,
    breakdown: pd.DataFrame | None = None,
    breakdown_column: str | None = None,
    definitions: Mapping[str, Mapping[str, float | int | str]] | None = None,
) -> str:
    """The self-contained report: provenance and evaluation settings, tables of metrics, and
    every figure inlined as a data URI."""
    names = list(results)
    first = results[names[0]]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if provenance:
        parts += [
            "<h2>Provenance</h2>",
            _table_html([[k, v] for k, v in provenance.items()], ["", "value"]),
        ]
    parts += ["<h2>Evaluation</h2>", _table_html([[k, v] for k, v in info.items()], ["", "value"])]
    if "bootstrap_resamples" in first.metrics:
        what = (
            "the test images are resampled with replacement, each TTA repeat scored on the same "
            "draw and averaged, as the headline (the TTA views stay fixed)"
            if first.repeat_preds is not None
            else "the test images are resampled with replacement"
        )
        note = (
            f"95 % CI: percentile bootstrap, {first.metrics['bootstrap_resamples']} resamples; "
            f"{what}."
        )
    else:
        note = "no bootstrap intervals (evaluate.bootstrap: 0)."
    heading = "TTA vs plain" if {"tta", "no_tta"} <= set(names) else "Headline metrics"
    parts += [
        f"<h2>{heading}</h2>",
        f"<p>{html.escape(note)}</p>",
        _headline_table(results),
    ]
    if baselines:
        parts += [
            "<h2>Baselines</h2>",
            _baseline_table(names[0], first, baselines),
        ]
    branch_rows = [
        [b] + [_fmt(results[n].metrics[f"branch_accuracy_{b}"]) for n in names]
        for b in first.branch_names
    ]
    branch_rows.append(["fused"] + [_fmt(results[n].fused_accuracy) for n in names])
    parts += ["<h2>Pyramid branches (accuracy)</h2>", _table_html(branch_rows, ["branch", *names])]
    if "accuracy_repeat_1" in first.metrics:
        m = first.metrics
        repeats = sorted(k for k in m if k.startswith("accuracy_repeat_"))
        rows = [[k.removeprefix("accuracy_"), _fmt(m[k])] for k in repeats]
        rows += [[s, _fmt(m[f"accuracy_{s}"])] for s in ("std", "max", "median")]
        rows += [
            ["mean (headline)", _fmt(m["accuracy"])],
            ["all views pooled", _fmt(m["pooled_accuracy"])],
        ]
        parts += [
            f"<h2>TTA repeats ({html.escape(names[0])}: the official report)</h2>",
            _table_html(rows, ["accuracy", "value"]),
        ]
    per_class = [
        [c] + [_fmt(first.metrics[f"{m}_{c}"]) for m in ("precision", "recall", "f1", "support")]
        for c in first.class_names
    ]
    parts += [
        f"<h2>Per class ({html.escape(names[0])})</h2>",
        _table_html(per_class, ["class", "precision", "recall", "f1", "support"]),
    ]
    if definitions:
        columns = ["num_samples", "accuracy", "macro_f1", "uar", "headline"]
        rows = [[name] + [_cell(d[c]) for c in columns] for name, d in definitions.items()]
        parts += [
            f"<h2>FER+ test-set definitions ({html.escape(names[0])})</h2>",
            _table_html(rows, ["definition", *columns]),
        ]
    if breakdown is not None:
        rows = [[_fmt(v) if isinstance(v, float) else str(v) for v in r] for r in breakdown.values]
        heading = f"Accuracy by {breakdown_column}" if breakdown_column else "Breakdown"
        parts += [
            f"<h2>{html.escape(heading)}</h2>",
            _table_html(rows, [str(c) for c in breakdown.columns]),
        ]
    parts.append("<h2>Figures</h2>")
    for caption, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "figure{display:inline-block;margin:1em}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_report(
    out_dir: str | Path,
    results: Mapping[str, EvalResult],
    *,
    images: np.ndarray | None = None,
    breakdown: pd.DataFrame | None = None,
    breakdown_column: str | None = None,
    title: str = "PSR-FER evaluation",
    info: Mapping[str, str] | None = None,
    provenance: Mapping[str, str] | None = None,
    baselines: Mapping[str, Mapping[str, float | int | str]] | None = None,
    definitions: Mapping[str, Mapping[str, float | int | str]] | None = None,
) -> Path:
    """Write every output into ``out_dir`` (replaced as a whole) and return its path.

    ``results`` maps a variant name (e.g. ``tta``, ``no_tta``) to its result; the first one is the
    headline. ``images`` (``[N, H, W, C]`` uint8, the split's) enables the mistakes grid.
    ``provenance`` (label -> value: model version, run id, commit, training configuration) is
    the caller's: the report shows it as given. ``baselines`` maps ``majority`` / ``chance`` to
    their scores (:func:`psr.metrics.majority_baseline`, :func:`psr.metrics.chance_baseline`).
    """
    if not results:
        raise ValueError("write_report needs at least one result")
    if breakdown is not None and not breakdown_column:
        raise ValueError("a breakdown table needs the name of its column")
    out_dir = Path(out_dir)
    first = next(iter(results.values()))
    # metrics.json marks an earlier report: any other non-empty folder is left alone.
    with atomic_directory(out_dir, marker="metrics.json") as tmp:
        (tmp / "metrics.json").write_text(
            json.dumps(metrics_document(results, baselines, definitions), indent=2) + "\n",
            encoding="utf-8",
        )
        predictions_table(first).to_csv(tmp / "predictions.csv", index=False)
        calibration_table(first).to_csv(tmp / "calibration.csv", index=False)
        figures = {
            "confusion matrix (counts)": tmp / "confusion_counts.png",
            "confusion matrix (row-normalised)": tmp / "confusion_normalized.png",
            "reliability diagram": tmp / "reliability.png",
            "per-class precision / recall / F1": tmp / "per_class.png",
            "pyramid branches vs fused": tmp / "branches.png",
        }
        plot_confusion(first, figures["confusion matrix (counts)"], normalize=False)
        plot_confusion(first, figures["confusion matrix (row-normalised)"], normalize=True)
        plot_reliability(first, figures["reliability diagram"])
        plot_per_class(first, figures["per-class precision / recall / F1"])
        plot_branches(results, figures["pyramid branches vs fused"])
        if images is not None:
            if len(images) != len(first.labels):
                raise ValueError(f"{len(images)} images for {len(first.labels)} evaluated samples")
            figures["most confident mistakes"] = tmp / "mistakes.png"
            plot_mistakes(first, images, figures["most confident mistakes"])
        if breakdown is not None:
            stem = breakdown_stem(breakdown_column)
            breakdown.to_csv(tmp / f"{stem}.csv", index=False)
            figures[f"accuracy by {breakdown_column}"] = tmp / f"{stem}.png"
            plot_breakdown(breakdown, breakdown_column, tmp / f"{stem}.png")
        page = render_html(
            results,
            figures,
            title=title,
            info=info or {},
            provenance=provenance,
            baselines=baselines,
            breakdown=breakdown,
            breakdown_column=breakdown_column,
            definitions=definitions,
        )
        (tmp / "report.html").write_text(page, encoding="utf-8")
    return out_dir


#: ``tta`` argument of :func:`report_checkpoint` -> the variants evaluated, headline first.
TTA_VARIANTS: dict[str, tuple[str, ...]] = {
    "on": ("tta",),
    "off": ("no_tta",),
    "both": ("tta", "no_tta"),
}


def report_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    tta: Literal["on", "off", "both"] = "on",
    tta_repeats: int = 3,
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    seed: int = 0,
    sidecar: str | Path | None = None,
    by_column: str | None = None,
    by_key: str | None = None,
    bins: int = 5,
    test_definition: str = "majority",
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    provenance: Mapping[str, str] | None = None,
) -> tuple[dict[str, EvalResult], pd.DataFrame | None]:
    """Evaluate an inference checkpoint on a prepared split and write the full report.

    ``tta="on"`` is the paper's evaluation; ``"both"`` adds the plain prediction side by side
    (the plain pass is TTA's first view: no extra inference). ``bootstrap`` resamples give each
    headline score its 95 % interval (0: none). ``provenance`` is shown as given, after what
    ``best.pt`` itself records (the selected epoch).
    ``sidecar`` + ``by_column`` add the accuracy breakdown (e.g. by ``face_size``). A FER+
    split is scored on ``test_definition``'s rows (:data:`psr.data.ferplus.TEST_DEFINITIONS`),
    and the headline variant on the other definition beside it. Returns the results by variant
    and the breakdown table.
    """
    from psr.data.ferplus import TEST_DEFINITIONS, split_definitions
    from psr.data.prepared import load_split
    from psr.data.transforms import AugmentConfig
    from psr.models import load_model

    if tta not in TTA_VARIANTS:
        raise ValueError(f"tta must be one of {list(TTA_VARIANTS)}, got {tta!r}")
    if (sidecar is None) != (by_column is None):
        raise ValueError("a breakdown needs both the sidecar file and the column")
    model, info = load_model(checkpoint, map_location="cpu")
    augment = info["extra"].get("augment")  # the training recipe's augmentation, for TTA
    augment = AugmentConfig(**augment) if augment else None
    if test_definition not in TEST_DEFINITIONS:
        raise ValueError(
            f"test_definition must be one of {TEST_DEFINITIONS}, got {test_definition!r}"
        )
    full = load_split(data, split)
    masks = split_definitions(data, split)
    prepared = full.subset(masks[test_definition]) if masks else full
    table = None
    if sidecar is not None:  # a bad sidecar fails now, not after minutes of evaluation
        table = load_sidecar(sidecar, key=by_key)
        if by_column not in table.columns:
            raise ValueError(
                f"{sidecar} has no column {by_column!r}; columns: {list(table.columns)}"
            )
        match_sidecar(prepared.ids, table, key=by_key)
    options = {
        "image_size": info["image_size"],
        "batch_size": batch_size,
        "tta_repeats": tta_repeats,
        "device": device,
        "workers": workers,
        "seed": seed,
        "class_names": info["class_names"],
        "augment": augment,
        "bootstrap": bootstrap,
    }
    results = evaluate_variants(model, prepared, TTA_VARIANTS[tta], **options)
    headline = next(iter(results))
    definitions = {}
    for name, mask in masks.items():
        result = (
            results[headline]
            if name == test_definition
            else evaluate_variants(model, full.subset(mask), (headline,), **options)[headline]
        )
        definitions[name] = definition_summary(result, used=name == test_definition)
    breakdown = None
    if table is not None:
        truth = TRUE_LABEL if TRUE_LABEL in table.columns else None
        breakdown = accuracy_breakdown(
            results, table, by_column, key=by_key, bins=bins, truth=truth
        )
    run_info = {
        "checkpoint": f"{checkpoint} ({_selected_epoch(info['extra'])})",
        "data": f"{data} ({split})",
        "model": str(info["config"].get("name")),
        "image size": str(info["image_size"]),
        "TTA": f"{tta} ({tta_repeats} repeats)" if tta != "off" else "off",
    }
    if breakdown is not None:
        run_info[f"breakdown by {by_column}"] = breakdown.attrs["matched_by"]
    if masks:
        run_info["test-set definition"] = (
            f"{test_definition} ({len(prepared)} of {len(full)} images; see the definitions table)"
        )
    baselines = {"chance": chance_baseline(prepared.labels, prepared.class_names)}
    majority = _majority_baseline(data, prepared)
    if majority is not None:
        baselines = {"majority": majority, **baselines}
    write_report(
        out_dir,
        results,
        images=prepared.images,
        breakdown=breakdown,
        breakdown_column=by_column,
        info=run_info,
        provenance=provenance,
        baselines=baselines,
        definitions=definitions,
    )
    return results, breakdown


def _selected_epoch(extra: Mapping[str, object]) -> str:
    """What ``best.pt`` says about the epoch it holds (written by :mod:`psr.engine.outputs`)."""
    if "epoch" not in extra:
        return "no training record"
    valid = f", valid accuracy {float(extra['valid_acc']):.4f}" if "valid_acc" in extra else ""
    return f"epoch {extra['epoch']}, phase {extra.get('phase', '?')}{valid}"


def _majority_baseline(data: str | Path, prepared) -> dict[str, float | str] | None:
    """The majority-class baseline of the evaluated split: the most frequent class of the
    dataset's train split (never of the evaluated split itself); None without a train split."""
    from psr.data.prepared import load_split, read_manifest
    from psr.metrics import majority_baseline

    if "train" not in read_manifest(data)["splits"]:
        return None
    train = load_split(data, "train")
    return majority_baseline(train.labels, prepared.labels, prepared.class_names)
