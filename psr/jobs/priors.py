"""Job ``priors``: the PDLS label prior of a prepared dataset, in its class order.

The paper's prior comes from FER+ crowd votes: the training split's own votes (FER+ and the
embedded synthetic data), or a FER+ vote file re-indexed by class name. ``official`` is the
authors' constant matrix (what the official RAF-DB and AffectNet runs use), re-indexed the same
way; ``uniform`` turns PDLS into plain label smoothing (the paper's ablation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class PriorsConfig(BaseModel):
    """Which prior, and what to do with a class that has no training images."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["votes", "official", "uniform"] = Field(
        "votes",
        description="votes: the paper's prior from crowd votes (the train split's, or votes_file "
        "re-indexed); official: the authors' constant fer_emo_dis re-indexed to the dataset's "
        "classes (the official RAF-DB and AffectNet runs); uniform: 1/K (PDLS becomes plain "
        "label smoothing)",
    )
    votes_file: Path | None = Field(
        None, description="FER+ vote file (fer2013new.csv) for datasets without crowd votes"
    )
    missing: Literal["error", "uniform"] = Field(
        "error", description="a class without training images: error, or a uniform row"
    )


@dataclass(frozen=True)
class PriorsResult:
    class_names: tuple[str, ...]
    matrix: np.ndarray  # [K, K], row y: the crowd's mass for images of class y
    source: str  # where the matrix came from, in words
    path: Path  # the priors.json written

    @property
    def diagonal_mean(self) -> float:
        return float(np.mean(np.diag(self.matrix)))


def compute(cfg: PriorsConfig, data: str | Path) -> tuple[tuple[str, ...], np.ndarray, str]:
    """``(class_names, matrix, source)`` of the configured prior for the dataset at ``data``."""
    from psr.data.prepared import read_manifest
    from psr.priors import official_prior, prior_for_dataset, uniform

    if cfg.kind == "votes":
        return prior_for_dataset(data, cfg.votes_file, cfg.missing)
    names = tuple(read_manifest(data)["class_names"])
    if cfg.kind == "official":
        return names, official_prior(names), "official fer_emo_dis (prlab_utils v1.0.0)"
    return names, uniform(len(names)), "uniform"


def run(
    cfg: PriorsConfig, data: str | Path, out: str | Path, *, figure: str | Path | None = None
) -> PriorsResult:
    """Write the prior of ``data`` to ``out`` (priors.json) and, if asked, a heatmap PNG."""
    from psr.priors import plot_priors, save_priors

    names, matrix, source = compute(cfg, data)
    save_priors(out, names, matrix, source)
    if figure is not None:
        plot_priors(figure, names, matrix, title=f"Label prior ({source})")
    return PriorsResult(class_names=names, matrix=matrix, source=source, path=Path(out))
