"""A tiny synthetic FER+ dataset, prepared by the real prepare job, shared by the job tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from psr.data.synthetic import SynthConfig, write_dataset
from psr.engine import TrainConfig
from psr.jobs import prepare, priors
from psr.models import ModelConfig

SIZE = 64


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """``<tmp>/prepared/tiny``: 64 train, 24 valid, 24 test synthetic faces, 8 classes."""
    root = tmp_path_factory.mktemp("jobs")
    synth = SynthConfig(seed=3, train=64, valid=24, test=24, class_balance="uniform")
    write_dataset("ferplus", root / "raw", synth, progress=False)
    cfg = prepare.PrepareConfig(
        dataset="ferplus", source=root / "raw", name="tiny", workers=1, progress=False
    )
    return prepare.run(cfg, root / "prepared").root


@pytest.fixture(scope="session")
def prior_file(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prior") / "priors.json"
    priors.run(priors.PriorsConfig(), prepared, out)
    return out


def _tiny_model(**changes) -> ModelConfig:
    """A very narrow PSR at S = 64 (the smallest S whose S/2 branch survives VGG's pools)."""
    fields = (
        dict(name="psr", image_size=SIZE, width=0.0625, sr_features=4, sr_res_blocks=1) | changes
    )
    return ModelConfig(**fields)


def _tiny_train(**changes) -> TrainConfig:
    fields = {
        "batch_size": 16,
        "phase1": {"epochs": 1, "lrs": [1e-3, 5e-3, 5e-3]},
        "phase2": {"epochs": 1, "optimizer": "sgd", "lrs": [1e-3, 5e-3, 5e-3]},
        "workers": 0,
        "device": "cpu",
        "progress": False,
    } | changes
    return TrainConfig(**fields)


@pytest.fixture
def tiny_model():
    """``tiny_model(**changes)``: the tiny ModelConfig."""
    return _tiny_model


@pytest.fixture
def tiny_train():
    """``tiny_train(**changes)``: a two-phase, one-epoch-each TrainConfig on the CPU."""
    return _tiny_train
