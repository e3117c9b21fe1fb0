"""Fixtures shared across the test folders: a tiny prepared dataset and a narrow PSR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psr.data.synthetic import SynthConfig, write_dataset
from psr.jobs import prepare
from psr.models import create_model

#: The smallest S whose S/2 branch survives VGG's pools.
TINY_SIZE = 64


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """``<tmp>/prepared/tiny``, made by the real prepare job: 64 train, 24 valid, 24 test
    synthetic FER+ faces, 8 classes."""
    root = tmp_path_factory.mktemp("jobs")
    synth = SynthConfig(seed=3, train=64, valid=24, test=24, class_balance="uniform")
    write_dataset("ferplus", root / "raw", synth, progress=False)
    cfg = prepare.PrepareConfig(
        dataset="ferplus", source=root / "raw", name="tiny", workers=1, progress=False
    )
    return prepare.run(cfg, root / "prepared").root


@pytest.fixture(scope="module")
def tiny_psr() -> torch.nn.Module:
    """A narrow PSR (4 classes, S = 64) with non-default BatchNorm statistics, in eval mode;
    one per test module, which may change its weights."""
    torch.manual_seed(0)
    net = create_model(
        "psr", num_classes=4, image_size=TINY_SIZE, width=0.125, sr_features=8, sr_res_blocks=1
    )
    net.train()(torch.randn(4, 3, TINY_SIZE, TINY_SIZE))
    return net.eval()
