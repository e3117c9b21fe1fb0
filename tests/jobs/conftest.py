"""The job tests' priors and tiny configurations, over the shared ``prepared`` dataset
(tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from psr.engine import TrainConfig
from psr.jobs import priors
from psr.models import ModelConfig

SIZE = 64


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
