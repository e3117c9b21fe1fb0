"""The paper's ablation family: what each arm changes, and the configuration it trains.

Every arm starts from params.yaml's ``model`` and ``train`` sections (the same width, input
size, schedule and seeds: the same budget, untuned), changes only what its row of the paper's
ablation changes, and trains against the majority labels so that the loss is the only
difference between arms 1-3. ``make ablate`` runs them all (``ablation/dvc.yaml``: one DVC
matrix stage per arm and seed, then the report), docs/ablation.md says how to read the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.paths import REPORTS_DIR

if TYPE_CHECKING:
    from pipeline.params import Params
    from psr.engine import TrainConfig
    from psr.models import ModelConfig

#: The ablation's DVC pipeline, and the main pipeline's stages its runs read (data, prior, SR
#: weights, the backbone).
ABLATION_DVC = "ablation/dvc.yaml"
ABLATION_INPUTS = ("download", "prepare", "priors", "sr_pretrain", "backbone")
#: Where one run (arm, seed) writes its numbers, and where the report goes.
ABLATION_DIR = REPORTS_DIR / "ablation"
RUNS_DIR = ABLATION_DIR / "runs"
SUMMARY_DIR = ABLATION_DIR / "summary"
RESULTS_FILE = SUMMARY_DIR / "results.md"
PLOT_FILE = SUMMARY_DIR / "accuracy_by_resolution.png"
#: The MLflow tag that names one ablation (its parent run and every arm's run).
TAG_ABLATION = "psr.ablation"


@dataclass(frozen=True)
class Arm:
    description: str
    model: dict[str, Any]  # ModelConfig fields over params.yaml's (member defaults fill the rest)
    loss: str
    uses_sr_weights: bool = False
    alpha: float | None = None  # the loss's label weight; None: params.yaml's train.loss.alpha


#: The paper's ablation, in its order: each arm adds one thing to the one before; first the
#: plain small CNN that every arm must beat (not one of the paper's rows).
ARMS: dict[str, Arm] = {
    "small_cnn": Arm(  # its head is one linear layer: no dropout, whatever params.yaml's
        "plain small CNN (sanity baseline), cross-entropy",
        {"name": "small_cnn", "head_dropout": None},
        "ce",
    ),
    "vgg16_ce": Arm("single-scale vgg16, cross-entropy", {"name": "vgg16"}, "ce"),
    # alpha 0.9: the official LabelSmoothingLoss default (prlab.fastai.utils)
    "vgg16_ls": Arm("+ uniform label smoothing", {"name": "vgg16"}, "uniform_ls", alpha=0.9),
    "vgg16_pdls": Arm("+ PDLS (the crowd-vote prior)", {"name": "vgg16"}, "pdls"),
    "pyramid_bicubic": Arm(
        "pyramid [1, 2, 1], bicubic instead of SR",
        {"name": "psr_interp", "stn": False},
        "pdls",
    ),
    "pyramid_sr": Arm(
        "pyramid [1, 2, 1] with the pre-trained EDSR", {"name": "psr_nostn"}, "pdls", True
    ),
    "psr": Arm("+ STN = PSR", {"name": "psr"}, "pdls", True),
    "psr_deep": Arm(
        "deeper pyramid [1, 2, 4, 1] (x4 EDSR not pre-trained)",
        {"name": "psr", "multiples": [1, 2, 4, 1]},
        "pdls",
        True,
    ),
}
#: Fields of params.yaml's model section that the family member decides per arm.
MEMBER_FIELDS = ("name", "multiples", "stn", "sr")


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def stage_name(arm: str, seed: int) -> str:
    """The DVC stage of one run in ``ablation/dvc.yaml`` (an item of its matrix stage ``arm``)."""
    return f"{ABLATION_DVC}:arm@{arm}-{seed}"


def run_dir(arm: str, seed: int) -> Path:
    return RUNS_DIR / run_name(arm, seed)


def model_config(params: Params, arm: str) -> ModelConfig:
    """params.yaml's model with the arm's member and changes; raises ValueError when the input
    size cannot carry the arm (e.g. the deeper pyramid below S = 128)."""
    from psr.models import ModelConfig

    base = params.model.model_dump(exclude={*MEMBER_FIELDS, "sr_weights"}, exclude_none=True)
    return ModelConfig(**(base | ARMS[arm].model))


def check_arms(params: Params) -> None:
    """Every arm of ``ablate.arms`` is one of :data:`ARMS` (a clear error otherwise)."""
    if params.ablate is None:
        raise ValueError("params.yaml has no ablate section (arms, seeds, epochs): see README")
    unknown = [arm for arm in params.ablate.arms if arm not in ARMS]
    if unknown:
        raise ValueError(f"params.yaml: ablate.arms: unknown {unknown}; valid: {list(ARMS)}")


def skip_reason(params: Params, arm: str) -> str | None:
    """Why the input size cannot carry ``arm``'s pyramid (VGG's pools), or None; any other
    configuration error is raised, not skipped."""
    from psr.models.pyramid import plan_pyramid

    multiples = ARMS[arm].model.get("multiples")
    if multiples is None:
        return None
    try:
        plan_pyramid(multiples, params.model.image_size)
    except ValueError as err:
        return str(err)
    return None


def train_config(params: Params, arm: str, seed: int) -> TrainConfig:
    """params.yaml's train section with the arm's loss, label targets, the seed and the
    ablation's epochs: the same budget for every arm."""
    cfg = params.ablate
    train = params.train
    update: dict[str, Any] = {"name": ARMS[arm].loss}
    if cfg.targets == "labels":
        update["targets"] = "labels"
    elif ARMS[arm].loss == "ce":  # the same loss on labels, and it takes train's distributions
        update["name"] = "soft_ce"
    if ARMS[arm].alpha is not None:
        update["alpha"] = ARMS[arm].alpha
    loss = train.loss.model_copy(update=update)
    phases = {
        name: phase.model_copy(update={"epochs": epochs})
        for name, phase, epochs in (
            ("phase1", train.phase1, cfg.phase1_epochs),
            ("phase2", train.phase2, cfg.phase2_epochs),
        )
        if epochs is not None
    }
    changed = train.model_copy(update={"loss": loss, "seed": seed, "progress": False, **phases})
    return type(train).model_validate(changed.model_dump())  # the same rules as params.yaml


def planned_runs(params: Params) -> list[tuple[str, int]]:
    """Every (arm, seed) the ablation trains, in report order."""
    check_arms(params)
    return [(arm, seed) for arm in params.ablate.arms for seed in params.ablate.seeds]
