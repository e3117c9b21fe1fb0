"""The tiny workspace the determinism and fault-injection tests share: params.yaml (tiny) and
the stages up to sr_pretrain run, in a temporary folder, without DVC."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> None:
    """A helper module of these tests, importable by name (the tests import with importlib)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


for _helper in ("dvc_repo", "browser", "servers"):
    if _helper not in sys.modules:
        _load(_helper)
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
    "tune.seed_repeats=0",  # tests that need the repeats ask for them
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


def _stage_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PSR_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    return env | extra


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium's path, installed with apt-get when missing (tests/pipeline/browser.py);
    the test is skipped, saying why, only when that fails."""
    import subprocess

    import browser

    try:
        return browser.ensure_chromium()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"headless Chromium unavailable: {error}")


@pytest.fixture(scope="session")
def stage_env():
    """``stage_env(**extra)``: the environment of a stage subprocess (none of the test
    process's MLflow or PSR settings, this checkout importable, one thread)."""
    return _stage_env


@pytest.fixture
def stage(workspace):
    """``stage(name, *args, failpoint=None, **env)``: ``python -m pipeline.stages.<name>`` in
    the workspace, killed at ``failpoint`` if given; the CompletedProcess."""
    import subprocess
    import sys

    def run(*command: str, failpoint: str | None = None, **env: str):
        extra = env | ({"PSR_FAILPOINT": failpoint} if failpoint else {})
        return subprocess.run(
            [sys.executable, "-m", f"pipeline.stages.{command[0]}", *command[1:]],
            cwd=workspace,
            env=_stage_env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run


@pytest.fixture
def run_tune_workers(workspace):
    """``run(envs, prefixes)``: one ``pipeline.stages.tune worker`` process per entry of
    ``envs`` (worker 1, 2, ...; each entry adds to its environment; ``prefixes[i]`` runs worker
    i's command under another, e.g. ``unshare``) under one MLflow parent run, waited for;
    returns ``[(returncode, output)]``."""
    import contextlib
    import subprocess
    import sys

    import mlflow

    from pipeline import tracking
    from pipeline.params import load_params

    def run(envs: list[dict[str, str]], prefixes: dict[int, list[str]] | None = None):
        with contextlib.chdir(workspace):
            tracking.use_experiment(load_params().dataset_name)
            with mlflow.start_run(run_name="tune-parallel") as parent:
                parent_id = parent.info.run_id
        command = [sys.executable, "-m", "pipeline.stages.tune", "worker"]
        workers = [
            subprocess.Popen(
                [
                    *(prefixes or {}).get(i, []),
                    *command,
                    f"--worker={i}",
                    f"--parent-run-id={parent_id}",
                ],
                cwd=workspace,
                env=_stage_env(**extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i, extra in enumerate(envs, start=1)
        ]
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        return [(w.returncode, out) for w, out in zip(workers, outputs, strict=True)]

    return run
