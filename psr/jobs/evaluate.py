"""Job ``evaluate``: an inference checkpoint on a prepared split, with the paper's TTA.

Writes the full report (:func:`psr.report.report_checkpoint`): ``metrics.json``,
``predictions.csv``, ``calibration.csv``, figures and ``report.html``; with a per-sample sidecar
(the synthetic generator's ``generation.csv``, or any CSV keyed by the prepared ids) the
accuracy is also broken down by one of its columns (by default the face size, when the
sidecar has it). The job knows no tracking: its caller hands it the provenance to show
(model version, run ids, commit, training configuration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from psr.evaluate import EvalResult, load_sidecar
from psr.metrics import BOOTSTRAP_RESAMPLES, HEADLINE, INTERVAL_METRICS

#: ``breakdown_by: auto``: this sidecar column when the sidecar has it (the generator's
#: rendered face size), else no breakdown.
AUTO = "auto"
AUTO_BREAKDOWN = "face_size"


class EvaluateConfig(BaseModel):
    """How to evaluate: split, TTA, batch and device, and the optional breakdown."""

    model_config = ConfigDict(extra="forbid")

    split: str = Field("test", min_length=1, description="prepared split to evaluate")
    tta: bool = Field(True, description="the paper's test-time augmentation")
    compare_plain: bool = Field(
        True,
        description="with tta: also report the plain prediction (TTA's first view, no extra "
        "inference) side by side",
    )
    tta_repeats: int = Field(3, ge=1, description="TTA repeats (paper: 3)")
    batch_size: int = Field(128, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    seed: int = Field(0, ge=0, description="seed of the random TTA views and the bootstrap")
    bootstrap: int = Field(
        BOOTSTRAP_RESAMPLES,
        ge=0,
        description="bootstrap resamples of the test images for the 95 % intervals (0: none)",
    )
    breakdown_by: str | None = Field(
        AUTO,
        min_length=1,
        description="a column of the sidecar (e.g. the generator's face_size, intensity) to "
        "break accuracy down by; auto: face_size when a sidecar is given and has it; null: none",
    )
    breakdown_key: str | None = Field(
        None, description="sidecar column holding the prepared ids (default: id)"
    )
    bins: int = Field(5, ge=1, description="equal-count bins of a numeric breakdown column")
    test_definition: Literal["majority", "argmax"] = Field(
        "majority",
        description="FER+ test set scored as the headline: majority = Microsoft's (images with "
        "a majority emotion, 3,153 of the real PrivateTest); argmax = every face with an emotion "
        "vote, labelled by its most voted one (3,573); the other is reported beside it",
    )

    @property
    def tta_mode(self) -> Literal["on", "off", "both"]:
        if not self.tta:
            return "off"
        return "both" if self.compare_plain else "on"


@dataclass(frozen=True)
class EvaluateResult:
    results: dict[str, EvalResult]  # by variant ("tta", "no_tta"), the headline first
    breakdown: pd.DataFrame | None
    breakdown_column: str | None  # the sidecar column of ``breakdown`` (auto resolved)
    out: Path

    @property
    def headline(self) -> tuple[str, EvalResult]:
        name = next(iter(self.results))
        return name, self.results[name]

    def logged_metrics(self) -> dict[str, float]:
        """The headline numbers of every variant, with their intervals: ``accuracy`` and
        ``accuracy_ci_low`` for the headline variant, ``no_tta_accuracy`` for the one beside."""
        first = self.headline[0]
        intervals = [f"{m}_ci_{end}" for m in INTERVAL_METRICS for end in ("low", "high")]
        return {
            f"{'' if name == first else f'{name}_'}{key}": float(result.metrics[key])
            for name, result in self.results.items()
            for key in (*HEADLINE, *intervals)
            if key in result.metrics
        }


def breakdown_column(cfg: EvaluateConfig, sidecar: str | Path | None) -> str | None:
    """The sidecar column to break accuracy down by: the configured one, or (``auto``)
    :data:`AUTO_BREAKDOWN` when ``sidecar`` is given and has that column."""
    if cfg.breakdown_by != AUTO:
        return cfg.breakdown_by
    if sidecar is None:
        return None
    table = load_sidecar(sidecar, key=cfg.breakdown_key)
    return AUTO_BREAKDOWN if AUTO_BREAKDOWN in table.columns else None


def run(
    cfg: EvaluateConfig,
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    sidecar: str | Path | None = None,
    provenance: Mapping[str, str] | None = None,
) -> EvaluateResult:
    """Evaluate ``checkpoint`` on ``cfg.split`` of ``data`` and write the report to ``out``
    (replaced as a whole). ``sidecar`` is needed when ``cfg.breakdown_by`` names a column;
    with ``auto`` it adds the face-size breakdown when it has that column. ``provenance``
    (label -> value) heads the report as given."""
    from psr.report import report_checkpoint

    column = breakdown_column(cfg, sidecar)
    results, breakdown = report_checkpoint(
        checkpoint,
        data,
        out,
        split=cfg.split,
        tta=cfg.tta_mode,
        tta_repeats=cfg.tta_repeats,
        batch_size=cfg.batch_size,
        device=cfg.device,
        workers=cfg.workers,
        seed=cfg.seed,
        sidecar=sidecar if column is not None else None,
        by_column=column,
        by_key=cfg.breakdown_key,
        bins=cfg.bins,
        test_definition=cfg.test_definition,
        bootstrap=cfg.bootstrap,
        provenance=provenance,
    )
    return EvaluateResult(
        results=results, breakdown=breakdown, breakdown_column=column, out=Path(out)
    )
