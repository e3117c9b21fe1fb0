"""The tiny workspace the determinism and fault-injection tests share: params.yaml (tiny) and
the stages up to sr_pretrain run, in a temporary folder, without DVC."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "download.synth.train=96",
    "download.synth.valid=32",
    "download.synth.test=16",
    "prepare.name=tiny",
    "sr_pretrain.steps=4",
    "sr_pretrain.valid_every=2",
    "sr_pretrain.batch_size=16",
    "sr_pretrain.max_images=48",
    "sr_pretrain.valid_images=16",
    "tune.enabled=true",
    "tune.n_trials=4",
    "tune.phase1_epochs=1",
    "tune.phase2_epochs=0",
    "tune.pruner.kind=median",
    "tune.data_fraction=0.5",
    "tune.startup_trials=2",
    "tune.storage=journal:optuna.journal",
    "model.width=0.0625",
    "model.sr_features=4",
    "model.sr_res_blocks=1",
    "train.batch_size=16",
    "train.phase1.epochs=1",
    "train.phase2.epochs=1",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with params.yaml (tiny) and the stages up to sr_pretrain run (one per test
    module: a module may change it)."""
    from pipeline.params import load_params, set_params
    from pipeline.stages import download, prepare, priors, sr_pretrain, tune

    root = tmp_path_factory.mktemp("workspace")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    set_params(root / "params.yaml", TINY)
    before = Path.cwd()
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("MLFLOW_", "PSR_"))}
    os.chdir(root)
    try:
        params = load_params()
        for stage in (download, prepare, priors, sr_pretrain):
            stage.run(params)
        disabled = params.model_copy(
            update={"tune": params.tune.model_copy(update={"enabled": False})}
        )
        tune.run(disabled)  # train reads reports/tune/best_params.json
        yield root
    finally:
        os.chdir(before)
        os.environ.update(env)
