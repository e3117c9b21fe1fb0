"""Job ``evaluate``: an inference checkpoint on a prepared split, with the paper's TTA.

Writes the full report (:func:`psr.report.report_checkpoint`): ``metrics.json``,
``predictions.csv``, ``calibration.csv``, figures and ``report.html``; with a per-sample sidecar
(the synthetic generator's ``generation.csv``, or any CSV keyed by the prepared ids) the
accuracy is also broken down by one of its columns (face size, intensity, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from psr.evaluate import EvalResult
from psr.report import HEADLINE


class EvaluateConfig(BaseModel):
    """How to evaluate: split, TTA, batch and device, and the optional breakdown."""

    model_config = ConfigDict(extra="forbid")

    split: str = Field("test", min_length=1, description="prepared split to evaluate")
    tta: bool = Field(True, description="the paper's test-time augmentation")
    compare_plain: bool = Field(
        False, description="with tta: also evaluate without TTA and report both side by side"
    )
    tta_repeats: int = Field(3, ge=1, description="TTA repeats (paper: 3)")
    batch_size: int = Field(128, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    seed: int = Field(0, ge=0, description="seed of the random TTA views")
    breakdown_by: str | None = Field(
        None,
        description="a column of the sidecar (e.g. the generator's face_size, intensity) to "
        "break accuracy down by",
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
    out: Path

    @property
    def headline(self) -> tuple[str, EvalResult]:
        name = next(iter(self.results))
        return name, self.results[name]

    def logged_metrics(self) -> dict[str, float]:
        """The headline numbers of every variant: ``accuracy`` for the headline variant,
        ``no_tta_accuracy`` for the one beside it."""
        first = self.headline[0]
        return {
            f"{'' if name == first else f'{name}_'}{key}": float(result.metrics[key])
            for name, result in self.results.items()
            for key in HEADLINE
            if key in result.metrics
        }


def run(
    cfg: EvaluateConfig,
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    sidecar: str | Path | None = None,
) -> EvaluateResult:
    """Evaluate ``checkpoint`` on ``cfg.split`` of ``data`` and write the report to ``out``
    (replaced as a whole). ``sidecar`` is needed when ``cfg.breakdown_by`` is set."""
    from psr.report import report_checkpoint

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
        sidecar=sidecar,
        by_column=cfg.breakdown_by,
        by_key=cfg.breakdown_key,
        bins=cfg.bins,
        test_definition=cfg.test_definition,
    )
    return EvaluateResult(results=results, breakdown=breakdown, out=Path(out))
