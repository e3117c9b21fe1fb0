"""``params.yaml`` -> typed configuration, validated at the start of every stage.

One section per stage. A section that configures a library job is that job's own pydantic
model (``prepare``, ``priors``, ``sr_pretrain``, ``evaluate``: the configs of :mod:`psr.jobs`;
``model`` = :class:`ModelConfig`, ``train`` = :class:`TrainConfig`, ``download.synth`` =
:class:`SynthConfig`); the pipeline's own sections (download, tune, distributed, register) are
defined here.
Every model forbids unknown keys, so a typo is an error that names the key
(``params.yaml: train.phase1.lr: Extra inputs are not permitted``), never a silent default.
Types are strict: ``epochs: true`` or ``batch_size: "32"`` are errors, not 1 and 32 (numbers
may be written ``1e-3``: YAML 1.2 floats, as DVC reads them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.paths import PARAMS_FILE, RAW_DIR, prepared_dir
from psr.data.ferplus import VoteMode
from psr.data.synthetic import SynthConfig
from psr.engine.config import TrainConfig
from psr.jobs.backbone import BackboneConfig
from psr.jobs.evaluate import EvaluateConfig
from psr.jobs.prepare import PrepareConfig
from psr.jobs.priors import PriorsConfig
from psr.jobs.sr_pretrain import SRPretrainConfig
from psr.models.config import ModelConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DownloadParams(Section):
    """Raw data: generate the embedded synthetic dataset, or check (and complete) a real one."""

    synthetic: bool = Field(
        True,
        description="generate a synthetic dataset in prepare.dataset's format into data/raw; "
        "false: prepare.source is a real dataset, checked here",
    )
    synth: SynthConfig = Field(default_factory=SynthConfig)
    workers: int = Field(1, ge=1, description="processes rendering synthetic images")
    ferplus_votes: Path | None = Field(
        None,
        description="real FER+: a local fer2013new.csv to copy into data/raw; null downloads it "
        "from microsoft/FERPlus when prepare.votes points into data/raw",
    )


class SearchDim(Section):
    """One dimension of the search space (Optuna ``suggest_*``)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDim:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs non-empty 'choices'")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} dimension needs low <= high")
        return self


class PrunerParams(Section):
    """How trials are stopped early. ``hyperband``: Optuna's HyperbandPruner (successive halving
    over epochs in several brackets: most trials get a few epochs, the best the full budget);
    ``median``: prune a trial whose validation accuracy falls below the median of earlier ones."""

    kind: Literal["hyperband", "median", "none"] = "hyperband"
    min_epochs: int = Field(1, ge=1, description="hyperband: epochs every trial gets")
    reduction_factor: int = Field(3, ge=2, description="hyperband: 1/eta of trials go on")
    startup_trials: int = Field(2, ge=0, description="median: trials that are never pruned")
    warmup_epochs: int = Field(1, ge=0, description="median: epochs never pruned")


class HeartbeatParams(Section):
    """Trials of workers on other machines (RDB servers only): a worker that dies leaves its
    trial RUNNING, which Optuna's sampler would count forever; heartbeats find it instead."""

    interval_s: int | None = Field(
        60, ge=1, description="seconds between a running trial's heartbeats (null: off)"
    )
    grace_s: int | None = Field(
        None, ge=1, description="a trial this long without a heartbeat is failed (null: 2x)"
    )
    max_retry: int = Field(3, ge=0, description="times a failed trial's values are retried")


class TuneParams(Section):
    """Optuna search over train/model knobs; the best values override ``train``/``model``."""

    enabled: bool = Field(True, description="false: train uses params.yaml as it is")
    n_trials: int = Field(8, ge=1, description="budget: finished trials in the study")
    timeout_s: float | None = Field(None, gt=0, description="budget: seconds for this run")
    phase1_epochs: int = Field(3, ge=1, description="epochs per trial (AdamW phase)")
    phase2_epochs: int = Field(0, ge=0, description="epochs per trial (SGD phase)")
    data_fraction: float = Field(0.5, gt=0, le=1, description="share of the training split")
    seed: int = Field(0, ge=0, description="TPE sampler seed")
    startup_trials: int = Field(4, ge=1, description="random trials before TPE models the space")
    storage: str | None = Field(
        None,
        description="null: sqlite optuna.db at the repository root; 'journal:<file>' for "
        "parallel workers; or an RDB URL (postgresql://...)",
    )
    study_prefix: str = Field("psr", description="study name = prefix + hash of its inputs")
    heartbeat: HeartbeatParams = Field(default_factory=HeartbeatParams)
    pruner: PrunerParams = Field(default_factory=PrunerParams)
    baseline_trial: bool = Field(
        True,
        description="enqueue params.yaml's own values of the space as the first trial, so the "
        "study says whether tuning beat the untuned default",
    )
    seed_repeats: int = Field(
        0,
        ge=0,
        description="the baseline trial again with train.seed + 1, + 2, ... (never pruned; part "
        "of n_trials): the seed-to-seed spread the trial values are read against",
    )
    space: dict[str, SearchDim] = Field(
        default_factory=dict, description="dotted path (train.* or model.*) -> dimension"
    )

    @model_validator(mode="after")
    def _repeats_need_the_baseline(self) -> TuneParams:
        if self.seed_repeats and not self.baseline_trial:
            raise ValueError("tune.seed_repeats repeats the baseline trial: set baseline_trial")
        if self.seed_repeats + 1 > self.n_trials:
            raise ValueError(
                f"tune.n_trials={self.n_trials} cannot hold the baseline and its "
                f"{self.seed_repeats} seed_repeats"
            )
        return self


class DistributedParams(Section):
    """How the train stage runs: one process (the default) or ``torchrun`` processes with DDP
    (:mod:`pipeline.launch`). ``nproc_per_node * nnodes`` processes each train on their shard
    of every batch (``train.batch_size`` is per process), so the world size changes the
    results: a DVC dependency of the train stage. Tuning trials always run in one process."""

    nproc_per_node: int = Field(
        1, ge=1, description="training processes on each machine (one per GPU on CUDA)"
    )
    nnodes: int = Field(1, ge=1, description="machines; >1 needs rdzv_endpoint")
    rdzv_endpoint: str | None = Field(
        None,
        description="host:port of node 0 (the machine that runs dvc repro), where the other "
        "nodes meet it; null on one machine (a free local port)",
    )

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port with a port in 1-65535, got {value!r}")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> DistributedParams:
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(
                f"nnodes is {self.nnodes}: set rdzv_endpoint to node 0's host:port, where the "
                "other nodes join it"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class RegisterParams(Section):
    """MLflow model registry: a new version, then the champion gate."""

    model_name: str = Field("psr-fer", min_length=1)
    metric: str = Field("accuracy", description="evaluate metric the champion gate compares")
    greater_is_better: bool = True
    min_improvement: float = Field(
        0.0, ge=0, description="the new version must beat the champion by more than this"
    )
    sample_size: int = Field(8, ge=1, description="test images used to check the loaded model")
    baseline_margin: float | None = Field(
        0.02,
        ge=0,
        description="a version must also beat the majority-class baseline on register.metric by "
        "more than this to become champion (null: no floor)",
    )


class AblateParams(Section):
    """The paper's ablation (``make ablate``, :mod:`pipeline.ablation`): which arms, how many
    seeds, and the one training budget every arm gets."""

    arms: list[str] = Field(
        min_length=1, description="arms of pipeline.ablation.ARMS (checked by the ablation)"
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        [0, 1, 2], min_length=1, description="train.seed of each repeat"
    )
    phase1_epochs: int | None = Field(None, ge=1, description="null: train.phase1.epochs")
    phase2_epochs: int | None = Field(None, ge=0, description="null: train.phase2.epochs")
    targets: Literal["labels", "train"] = Field(
        "labels",
        description="labels: every arm against the majority labels (the loss is then the only "
        "difference between arms 1-3); train: train.loss.targets, the registered model's",
    )

    @model_validator(mode="after")
    def _unique(self) -> AblateParams:
        for what, values in (("arms", self.arms), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"ablate.{what} lists a value twice: {values}")
        return self


class BackboneParams(BackboneConfig):
    """The backbone stage: the job's steps, and the FER+ files it prepares (vote_mode)."""

    source: Path = Field(
        Path("data/external/fer2013"), description="folder with Kaggle's fer2013.csv"
    )
    votes: Path = Field(
        RAW_DIR / "fer2013new.csv",
        description="FER+ vote file; inside data/raw the download stage fetches it",
    )
    vote_mode: VoteMode = Field("official", description="FER+ targets (the official code's)")


class Params(Section):
    """The whole ``params.yaml``."""

    download: DownloadParams = Field(default_factory=DownloadParams)
    prepare: PrepareConfig
    priors: PriorsConfig = Field(default_factory=PriorsConfig)
    sr_pretrain: SRPretrainConfig = Field(default_factory=SRPretrainConfig)
    backbone: BackboneParams = Field(default_factory=BackboneParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedParams = Field(default_factory=DistributedParams)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    # ``register`` would shadow pydantic's (ABC) ``register`` classmethod: aliased.
    registry: RegisterParams = Field(default_factory=RegisterParams, alias="register")
    ablate: AblateParams | None = Field(None, description="make ablate's arms, seeds, budget")

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.download.synthetic and Path(self.prepare.source) != RAW_DIR:
            raise ValueError(
                f"download.synthetic writes {RAW_DIR}: set prepare.source to {RAW_DIR} "
                f"(got {self.prepare.source})"
            )
        if self.evaluate.breakdown_by not in (None, "auto") and not self.download.synthetic:
            raise ValueError(
                f"evaluate.breakdown_by: {self.evaluate.breakdown_by} needs the synthetic "
                "generator's generation.csv (download.synthetic: true); auto or null work on "
                "any data"
            )
        for path in self.tune.space:
            if not path.startswith(("train.", "model.")):
                raise ValueError(f"tune.space.{path}: paths start with 'train.' or 'model.'")
        return self

    @property
    def dataset_name(self) -> str:
        """The prepared folder name, also the MLflow experiment's suffix."""
        return self.prepare.name or self.prepare.dataset

    @property
    def breakdown_sidecar(self) -> bool:
        """Whether the evaluation gets the generator's per-image ``generation.csv`` (synthetic
        data, ``evaluate.breakdown_by`` not null) to break accuracy down by."""
        return self.download.synthetic and self.evaluate.breakdown_by is not None

    @property
    def prepared_dir(self) -> Path:
        return prepared_dir(self.dataset_name)


def _location(loc: tuple[Any, ...]) -> str:
    # pydantic adds the class of a tagged/union member to loc; keep the user's keys only.
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def format_errors(err: ValidationError, source: str, prefix: str = "") -> str:
    """One line per error: ``<source>: <prefix><dotted key>: <message>``."""
    lines = [
        f"{source}: {prefix}{_location(e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
    ]
    return "invalid parameters:\n  " + "\n  ".join(lines)


def parse_params(data: Mapping[str, Any], source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed ``params.yaml``; errors name every bad key (``train.batch_size``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:  # JSON mode: strict types, but strings for paths and literals, ints for floats
        return Params.model_validate_json(json.dumps(dict(data), default=str), strict=True)
    except ValidationError as err:
        raise ValueError(format_errors(err, source)) from None


class _Loader(yaml.SafeLoader):
    """PyYAML with YAML 1.2 floats: ``1e-3`` is a number (YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``path`` (default ``params.yaml`` in the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path.resolve()}")
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data or {}, str(path))


def set_params(path: str | Path, assignments: list[str]) -> Params:
    """Apply ``section.key=value`` assignments to ``path`` like ``dvc exp run -S`` (values are
    YAML; comments and order are kept); the file changes only if the result validates."""
    from ruamel.yaml import YAML

    from psr.fileio import write_text

    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    rt.representer.add_representer(  # write null, not an empty value
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = rt.load(path.read_text(encoding="utf-8"))
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected section.key=value, got {assignment!r}")
        *parents, leaf = key.strip().split(".")
        node = document
        for part in parents:
            if part not in node:
                node[part] = {}
            node = node[part]
        node[leaf] = read_yaml(raw)  # YAML 1.2 floats, as DVC reads -S values
    params = parse_params(document, f"{path} with {assignments}")
    from io import StringIO

    buffer = StringIO()
    rt.dump(document, buffer)
    write_text(path, buffer.getvalue())
    return params
