"""The whole pipeline on the tiny configuration, with the real tools: DVC, MLflow (SQLite,
registry, serving), Optuna, Prefect (server, work pool, worker, deployment).

One module fixture reproduces the pipeline in a temporary git repository; the tests then read
what it left and exercise the services against it. They run in file order (the registry tests
add versions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import servers  # tests/pipeline/servers.py
from dvc_repo import BIN, clean_env, copy_repository, run  # tests/pipeline/dvc_repo.py

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The tiny configuration: a few hundred 48 px faces, a very narrow PSR, short schedules.
TINY = [
    "download.synth.train=240",
    "download.synth.valid=64",
    "download.synth.test=64",
    "prepare.name=tiny",
    "sr_pretrain.steps=4",
    "sr_pretrain.valid_every=2",
    "sr_pretrain.batch_size=32",
    "sr_pretrain.max_images=128",
    "sr_pretrain.valid_images=32",
    "tune.enabled=true",  # off in the embedded default; the machinery is tested here
    "tune.n_trials=5",
    "tune.phase1_epochs=2",
    "tune.phase2_epochs=0",
    "tune.data_fraction=0.5",
    "tune.startup_trials=2",
    "tune.pruner.kind=median",  # prunes something even in five 2-epoch trials
    "tune.pruner.startup_trials=1",
    "tune.pruner.warmup_epochs=0",
    "tune.seed_repeats=0",  # unprunable repeats would leave too few trials to prune (unit-tested)
    "model.width=0.0625",
    "model.sr_features=8",
    "model.sr_res_blocks=1",
    "train.batch_size=32",
    "train.phase1.epochs=2",
    "train.phase2.epochs=1",
    "evaluate.tta_repeats=1",
    "evaluate.batch_size=64",
    "register.sample_size=4",
    "register.baseline_margin=null",  # the tiny model need not clear the floor (unit-tested)
    # the ablation's machinery: every arm (the small CNN too), one seed, one epoch
    "ablate.arms=[small_cnn,vgg16_ce,vgg16_ls,vgg16_pdls,pyramid_bicubic,pyramid_sr,psr,psr_deep]",
    "ablate.seeds=[0]",
    "ablate.phase1_epochs=1",
    "ablate.phase2_epochs=0",
]
#: A wide learning-rate range: trials differ enough for the median pruner to stop some.
TINY_SPACE = {
    f"train.phase1.lrs.{i}": {"type": "float", "low": 1e-5, "high": 0.1, "log": True}
    for i in (1, 2)
}
#: `prefect deployment run` waits for the run, polling it each second (test time)
WATCH = ("--watch", "--watch-interval", "1")
README_REQUEST = '{"inputs": [[[[0], [64], [128]], [[64], [128], [192]], [[128], [192], [255]]]]}'
STAGES = (
    "download", "prepare", "priors", "sr_pretrain", "backbone", "tune", "train", "evaluate",
    "register",
)  # fmt: skip


@dataclass
class PipelineRepo:
    root: Path
    repro: subprocess.CompletedProcess

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> PipelineRepo:
    """The tiny pipeline, reproduced once with the real tools, shared by the e2e tests."""
    root = copy_repository(tmp_path_factory.mktemp("pipeline") / "repo", TINY, TINY_SPACE)
    repro = run([str(BIN / "dvc"), "repro"], root, timeout=1200)
    return PipelineRepo(root, repro)


def client(repo: PipelineRepo):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=repo.tracking_uri, registry_uri=repo.tracking_uri)


def stage_runs(repo: PipelineRepo) -> dict[str, list]:
    """Runs of the repo's experiment by DVC stage (trial runs included under ``tune``)."""
    mlflow_client = client(repo)
    experiment = mlflow_client.get_experiment_by_name("psr-tiny")
    assert experiment is not None, "no MLflow experiment psr-tiny"
    runs = mlflow_client.search_runs([experiment.experiment_id], max_results=1000)
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.data.tags.get("dvc.stage", "?"), []).append(r)
    return by_stage


def record(repo: PipelineRepo, stage: str) -> dict:
    return json.loads((repo.root / "reports" / stage / "mlflow_run.json").read_text())


def test_repro_produces_every_output(pipeline_repo: PipelineRepo):
    root = pipeline_repo.root
    for stage in STAGES:
        assert f"Running stage '{stage}'" in pipeline_repo.repro.stdout
    for path in (
        "data/raw/fer2013.csv",
        "data/prepared/tiny/manifest.json",
        "data/priors/priors.json",
        "models/sr/sr_x2.pt",
        "reports/tune/best_params.json",
        "reports/tune/optimization_history.png",
        "reports/tune/param_importances.png",
        "models/psr/best.pt",
        "models/psr/last.pt",
        "reports/train/history.csv",
        "reports/evaluate/predictions.csv",
        "reports/evaluate/calibration.csv",
        "reports/evaluate/report.html",
        "reports/registry.json",
    ):
        assert (root / path).is_file(), path
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["num_samples"] > 0
    history = (root / "reports/train/history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # header + 2 + 1 epochs
    predictions = (root / "reports/evaluate/predictions.csv").read_text().splitlines()
    assert predictions[0].startswith("id,actual,predicted")


def test_every_stage_logged_one_run_with_tags(pipeline_repo: PipelineRepo):
    by_stage = stage_runs(pipeline_repo)
    manifest = json.loads((pipeline_repo.root / "data/prepared/tiny/manifest.json").read_text())
    from psr.data.prepared import data_checksum

    for stage in STAGES:
        parents = [r for r in by_stage[stage] if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, (stage, len(parents))
        run_ = parents[0]
        assert run_.info.status == "FINISHED"
        assert run_.data.tags.get("mlflow.source.git.commit"), stage
        if stage not in ("download", "backbone"):  # the backbone (off here) reads its own FER+
            assert run_.data.tags["psr.data_checksum"] == data_checksum(manifest)
        if stage != "register":
            assert record(pipeline_repo, stage)["run_id"] == run_.info.run_id
    train = next(r for r in by_stage["train"] if "mlflow.parentRunId" not in r.data.tags)
    history = client(pipeline_repo).get_metric_history(train.info.run_id, "valid_acc")
    assert [m.step for m in history] == [1, 2, 3]  # epoch numbers (1-based), through the callback
    assert "train.phase1.lrs" in train.data.params


def test_one_identity_ties_the_stage_runs_of_one_repro(pipeline_repo: PipelineRepo):
    """Every stage run (and tuning trial) of the one ``dvc repro`` names the same execution, the
    clean workspace and the params digest; the evaluate run carries the training parameters and
    the registered model the test metrics, so one view compares accuracy with learning rate."""
    from pipeline import identity

    by_stage = stage_runs(pipeline_repo)
    top = {
        stage: next(r for r in by_stage[stage] if "mlflow.parentRunId" not in r.data.tags)
        for stage in STAGES
    }
    execution = top["train"].data.tags["psr.pipeline_run"]
    assert execution.startswith("dvc-")  # the dvc process: dvc-<pid>-<start time>
    digest = identity.params_digest(pipeline_repo.root / "params.yaml")
    for stage, run_ in top.items():
        tags = run_.data.tags
        assert tags["psr.pipeline_run"] == execution, stage
        assert run_.info.run_name == f"{stage} · {execution}"
        assert tags["psr.git.dirty"] == "false", (stage, tags.get("psr.git.changes"))
        assert tags["psr.params_digest"] == digest, stage
    trials = [r for r in by_stage["tune"] if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["psr.pipeline_run"] for r in trials} == {execution}

    train, evaluate, register = top["train"], top["evaluate"], top["register"]
    lrs = train.data.params["train.phase1.lrs"]
    assert evaluate.data.params["train.phase1.lrs"] == lrs
    assert evaluate.data.tags["psr.run.train"] == train.info.run_id
    accuracy = evaluate.data.metrics["accuracy"]
    mlflow_client = client(pipeline_repo)
    registry = json.loads((pipeline_repo.root / "reports/registry.json").read_text())
    model = mlflow_client.get_logged_model(registry["logged_model_id"])
    assert {m.key: m.value for m in model.metrics}["accuracy"] == pytest.approx(accuracy)
    assert model.params["train.phase1.lrs"] == lrs and "evaluate.split" in model.params
    assert model.tags["psr.pipeline_run"] == execution
    ranked = mlflow_client.search_logged_models(  # what the experiment's model list sorts by
        [train.info.experiment_id],
        filter_string="metrics.accuracy >= 0",
        order_by=[{"field_name": "metrics.accuracy", "ascending": False}],
    )
    assert registry["logged_model_id"] in [m.model_id for m in ranked]
    version = mlflow_client.get_model_version("psr-fer", registry["version"])
    assert version.tags["psr.pipeline_run"] == execution
    assert version.run_id == register.info.run_id  # its source run, compared by the registry
    assert register.data.metrics["accuracy"] == pytest.approx(accuracy)
    assert register.data.params["train.phase1.lrs"] == lrs


def test_the_registry_is_read_from_another_directory_without_creating_a_database(
    pipeline_repo: PipelineRepo, tmp_path
):
    """``psr predict --model-uri models:/psr-fer@champion`` elsewhere: with --tracking-uri or
    MLFLOW_TRACKING_URI it predicts; with neither it says what to set; no mlflow.db appears."""
    import cv2

    from psr.data.prepared import load_split

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    face = np.asarray(load_split(pipeline_repo.root / "data/prepared/tiny", "test").images[0])
    cv2.imwrite(str(elsewhere / "face.png"), face)
    command = [str(BIN / "psr"), "predict", "face.png", "--no-detect"]
    command += ["--model-uri", "models:/psr-fer@champion"]
    unset = subprocess.run(
        command, cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert unset.returncode == 2, unset.stderr[-3000:]
    assert "no MLflow tracking URI is set" in unset.stderr
    assert "--tracking-uri" in unset.stderr and "MLFLOW_TRACKING_URI" in unset.stderr
    given = run([*command, "--tracking-uri", pipeline_repo.tracking_uri], elsewhere, timeout=300)
    from_env = run(command, elsewhere, timeout=300, MLFLOW_TRACKING_URI=pipeline_repo.tracking_uri)
    for result in (given, from_env):
        assert "1 face(s); 0 frame(s) without a face" in result.stdout
    assert [p.name for p in elsewhere.iterdir()] == ["face.png"]  # no mlflow.db


def test_tuning_trials_are_nested_runs_and_some_were_pruned(pipeline_repo: PipelineRepo):
    import optuna

    tune_run = record(pipeline_repo, "tune")["run_id"]
    trials = [
        r
        for r in stage_runs(pipeline_repo)["tune"]
        if r.data.tags.get("mlflow.parentRunId") == tune_run
    ]
    n_trials = int(next(a for a in TINY if a.startswith("tune.n_trials=")).split("=")[1])
    assert len(trials) == n_trials
    states = {r.data.tags["optuna.state"] for r in trials}
    assert "PRUNED" in states and "COMPLETE" in states
    study_name = json.loads((pipeline_repo.root / "reports/tune/best_params.json").read_text())
    study = optuna.load_study(
        study_name=study_name["study"], storage=f"sqlite:///{pipeline_repo.root / 'optuna.db'}"
    )
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(pruned) >= 1
    metrics = json.loads((pipeline_repo.root / "reports/tune/metrics.json").read_text())
    assert metrics["trials_pruned"] == len(pruned)


def test_registered_version_is_champion(pipeline_repo: PipelineRepo):
    registry = json.loads((pipeline_repo.root / "reports/registry.json").read_text())
    assert registry["name"] == "psr-fer"
    assert registry["decision"] == "promoted"
    baseline = registry["metric"]["majority_baseline"]  # recorded beside the decision
    assert 0 < baseline < 1 and registry["metric"]["baseline_margin"] is None
    assert registry["aliases"] == {
        "champion": registry["version"],
        "challenger": registry["version"],
    }
    assert registry["verified_max_abs_diff"] <= 1e-5
    assert registry["onnx_verified_max_abs_diff"] <= 1e-4
    version = client(pipeline_repo).get_model_version_by_alias("psr-fer", "champion")
    assert str(version.version) == registry["version"]
    assert version.tags["psr.validation"] == "passed"
    assert version.tags["psr.onnx_model_uri"] == registry["onnx_model_uri"]


def test_evaluation_report_has_provenance_intervals_baselines_and_face_sizes(
    pipeline_repo: PipelineRepo,
):
    """reports/evaluate/ of the stage: TTA beside the plain pass with 95 % intervals, both
    baselines, the face-size breakdown by default, and the provenance the stage hands the job
    (this run, the train run, the commit, the training configuration); epochs from 1."""
    import pandas as pd

    root = pipeline_repo.root
    out = root / "reports/evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "tta" and "accuracy" in metrics["no_tta"]
    for doc in (metrics, metrics["no_tta"]):
        assert doc["accuracy_ci_low"] <= doc["accuracy"] <= doc["accuracy_ci_high"]
        assert doc["bootstrap_resamples"] == 1000
    assert metrics["chance_baseline"]["accuracy"] == pytest.approx(1 / 8)
    assert (out / "accuracy_by_face_size.csv").is_file()  # breakdown_by: auto
    page = (out / "report.html").read_text()
    for heading in ("Provenance", "TTA vs plain", "Baselines", "Accuracy by face_size"):
        assert f"<h2>{heading}</h2>" in page, heading
    evaluate_run = client(pipeline_repo).get_run(record(pipeline_repo, "evaluate")["run_id"])
    commit = evaluate_run.data.tags["mlflow.source.git.commit"]
    assert f"<td>git commit</td><td>{commit}</td>" in page
    assert f"<td>evaluate run</td><td>{evaluate_run.info.run_id} (psr-tiny)</td>" in page
    assert f"<td>train run</td><td>{record(pipeline_repo, 'train')['run_id']}</td>" in page
    assert "train.phase1.epochs=2" in page and "no registry version yet" in page
    history = pd.read_csv(root / "reports/train/history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    best = json.loads((root / "reports/train/metrics.json").read_text())["best_epoch"]
    assert f"best.pt (epoch {best}, phase " in page  # best.pt's epoch, numbered as history.csv's


def test_psr_evaluate_a_registered_model_names_its_version(pipeline_repo: PipelineRepo, tmp_path):
    root = pipeline_repo.root
    version = client(pipeline_repo).get_model_version_by_alias("psr-fer", "champion")
    out = tmp_path / "evaluate"
    args = ["evaluate", "--model-uri", "models:/psr-fer@champion", "--data", "data/prepared/tiny"]
    args += ["--out", str(out), "--tta", "off", "--device", "cpu", "--bootstrap", "100"]
    run([str(BIN / "psr"), *args], root, MLFLOW_TRACKING_URI=pipeline_repo.tracking_uri)
    page = (out / "report.html").read_text()
    assert f"<td>registered model</td><td>psr-fer version {version.version}</td>" in page
    assert f"<td>run id</td><td>{version.run_id}</td>" in page
    assert "champion" in page


def test_second_repro_does_nothing(pipeline_repo: PipelineRepo):
    before = sum(len(v) for v in stage_runs(pipeline_repo).values())
    result = run([str(BIN / "dvc"), "repro"], pipeline_repo.root, timeout=300)
    assert "Data and pipelines are up to date." in result.stdout
    assert "Running stage" not in result.stdout
    assert sum(len(v) for v in stage_runs(pipeline_repo).values()) == before


def test_save_records_the_run_so_that_metrics_diff_sees_head(pipeline_repo: PipelineRepo):
    """A fresh run is not in git (HEAD has no dvc.lock): DVC compares nothing and the hint
    says so. ``make save`` (pipeline.save) refuses a stale pipeline, then commits the run, after
    which ``dvc metrics diff`` has HEAD's values; a second save has nothing to do."""
    from pipeline.params import set_params

    root = pipeline_repo.root
    dvc, save = str(BIN / "dvc"), [str(BIN / "python"), "-m", "pipeline.save"]
    unsaved = run([dvc, "metrics", "diff", "--all"], root)
    assert "failed to load some metrics for following revisions: 'HEAD'" in (
        unsaved.stdout + unsaved.stderr
    )
    assert "`make save` commits it" in run([*save, "--hint"], root).stdout

    params = root / "params.yaml"
    original = params.read_text()
    set_params(params, ["evaluate.batch_size=32"])
    try:
        stale = subprocess.run(save, cwd=root, env=clean_env(), capture_output=True, text=True)
    finally:
        params.write_text(original)
    assert stale.returncode == 1
    assert "make save: the pipeline is not up to date (evaluate, validate:" in stale.stderr

    saved = run(save, root)
    assert "Saved as" in saved.stdout
    git = ["git", "log", "-1", "--name-only", "--format=%s"]
    subject, _, *files = run(git, root).stdout.splitlines()
    assert files == ["dvc.lock"]  # params.yaml and the code were committed already
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert subject.startswith(f"Run: test accuracy {metrics['accuracy']:.4f}, macro-F1 ")
    assert subject.endswith("(params.yaml as committed)")

    table = run([dvc, "metrics", "diff", "--all"], root)
    assert "failed to load" not in table.stdout + table.stderr
    diff = json.loads(run([dvc, "metrics", "diff", "--all", "--json"], root).stdout)
    assert diff["reports/evaluate/metrics.json"]["accuracy"]["old"] == metrics["accuracy"]
    cells = [m for file in diff.values() for m in file.values()]
    assert len(cells) > 20 and all(m["old"] == m["new"] for m in cells)  # HEAD: every value

    again = subprocess.run(save, cwd=root, env=clean_env(), capture_output=True, text=True)
    assert again.returncode == 1 and "nothing to save: HEAD (" in again.stderr
    assert run([*save, "--hint"], root).stdout == ""


def _digests(root: Path, path: str) -> dict[str, str]:
    """sha256 of every file of output ``path`` (a file or a folder), by its path under root."""
    import hashlib

    target = root / path
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_a_second_clone_pulls_the_run_and_has_nothing_to_reproduce(
    pipeline_repo: PipelineRepo, tmp_path
):
    """``make push`` to the default remote of .dvc/config (``~/.cache/psr-fer/dvc-remote``,
    HOME a temporary folder here) after ``make save``; a ``git clone`` then ``make pull``s every
    output dvc.lock names (prepared data, SR weights, model ...) bit for bit, and ``dvc status``
    and ``dvc repro`` there have nothing to do: nothing runs, no MLflow database appears (runs
    and registry stay in the tracking store). A clone without dvc.lock, as of this repository,
    is refused by ``make pull`` with what to do instead, and ``dvc repro --pull`` restores
    every stage up to evaluate from the pulled run-cache."""
    import yaml

    root, dvc = pipeline_repo.root, str(BIN / "dvc")
    home = tmp_path / "home"
    home.mkdir()
    save = [str(BIN / "python"), "-m", "pipeline.save"]
    saved = subprocess.run(save, cwd=root, env=clean_env(), capture_output=True, text=True)
    assert saved.returncode == 0 or "nothing to save: HEAD (" in saved.stderr, saved.stderr
    venv = BIN.parent  # the Makefile's verbs, with this venv taken as installed
    make = ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed"]

    pushed = run([*make, "push"], root, HOME=str(home))
    remote_dir = home / ".cache" / "psr-fer" / "dvc-remote"
    assert f"dvc push --run-cache to remote 'local' ({remote_dir})" in pushed.stdout
    assert any((remote_dir / "runs").rglob("*")), "no run-cache entry was pushed"

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    assert not (clone / "data").exists() and not (clone / "models").exists()
    pulled = run([*make, "pull"], clone, HOME=str(home))
    assert f"dvc pull --run-cache from remote 'local' ({remote_dir})" in pulled.stdout
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    outs = [out["path"] for stage in lock.values() for out in stage.get("outs", [])]
    for path in ("data/prepared", "models/sr", "models/psr", "reports/registry.json"):
        assert path in outs, path
    for path in outs:
        assert _digests(clone, path) == _digests(root, path), path
    assert (clone / "models/psr/best.pt").is_file() and (clone / "models/sr/sr_x2.pt").is_file()
    # dvc.yaml: the main pipeline (ablation/dvc.yaml has not run in either repository)
    status = run([dvc, "status", "--json", "dvc.yaml"], clone)
    assert json.loads(status.stdout) == {}
    repro = run([dvc, "repro"], clone, timeout=300)
    assert "Data and pipelines are up to date." in repro.stdout
    assert "Running stage" not in repro.stdout
    assert not (clone / "mlflow.db").exists()

    bare = tmp_path / "bare"
    run(["git", "clone", "-q", str(root), str(bare)], tmp_path)
    (bare / "dvc.lock").unlink()
    refused = subprocess.run(
        [*make, "pull"], cwd=bare, env=clean_env(HOME=str(home)), capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "make pull: dvc.lock: none, so no output is named to pull" in refused.stderr
    assert "`dvc repro --pull` restores every stage" in refused.stderr
    restored = run([dvc, "repro", "--pull", "evaluate"], bare, timeout=600, HOME=str(home))
    for stage in STAGES[:-1]:
        assert f"Stage '{stage}' is cached - skipping run" in restored.stdout, stage
    assert "Running stage" not in restored.stdout
    for stage in STAGES[:-1]:
        for out in lock[stage].get("outs", []):
            assert _digests(bare, out["path"]) == _digests(root, out["path"]), out["path"]
    assert not (bare / "mlflow.db").exists()


def test_a_misspelled_section_fails_repro_instead_of_up_to_date(pipeline_repo: PipelineRepo):
    """No stage tracks ``evalaute``; the validate stage tracks the whole file."""
    params = pipeline_repo.root / "params.yaml"
    original = params.read_text()
    params.write_text(original + "evalaute:\n  tta: false\n")
    try:
        result = subprocess.run(
            [str(BIN / "dvc"), "repro"],
            cwd=pipeline_repo.root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        params.write_text(original)
    assert result.returncode != 0
    assert "params.yaml: evalaute: Extra inputs are not permitted" in result.stderr
    assert "Running stage 'validate'" in result.stdout
    run([str(BIN / "dvc"), "repro", "validate"], pipeline_repo.root, timeout=300)


def test_run_cache_restore_keeps_run_ids_and_reregisters(pipeline_repo: PipelineRepo):
    """Without dvc.lock every tracked stage is restored from the run-cache (no new runs; the
    restored records still name existing runs); register, kept out of the run-cache, runs again
    and its equal metric does not move the champion."""
    root = pipeline_repo.root
    records = {stage: record(pipeline_repo, stage)["run_id"] for stage in STAGES[:-1]}
    before = {k: len(v) for k, v in stage_runs(pipeline_repo).items()}
    lock = root / "dvc.lock"
    saved = lock.read_text()
    lock.unlink()
    try:
        result = run([str(BIN / "dvc"), "repro"], root, timeout=600)
    finally:
        if not lock.exists():
            lock.write_text(saved)
    for stage in STAGES[:-1]:
        assert f"Stage '{stage}' is cached - skipping run" in result.stdout
        assert record(pipeline_repo, stage)["run_id"] == records[stage]
    assert "Running stage 'register'" in result.stdout
    after = {k: len(v) for k, v in stage_runs(pipeline_repo).items()}
    assert after == {**before, "register": before["register"] + 1}
    registry = json.loads((root / "reports/registry.json").read_text())
    assert registry["decision"] == "kept champion"
    assert registry["aliases"]["champion"] != registry["version"]
    assert registry["aliases"]["challenger"] == registry["version"]


def test_temp_experiment_logs_to_the_shared_database(pipeline_repo: PipelineRepo):
    """``dvc exp run --temp -S`` runs in .dvc/tmp/exps; its runs land in the repo's mlflow.db.
    (An evaluate parameter: a train one would rerun tune and train as well, minutes of test.)"""
    root = pipeline_repo.root
    result = run(
        [str(BIN / "dvc"), "exp", "run", "--temp", "-n", "short", "-S", "evaluate.tta_repeats=2"],
        root,
        timeout=900,
    )
    assert "Running stage 'evaluate'" in result.stdout
    assert "Running stage 'train'" not in result.stdout
    evaluate_runs = [
        r
        for r in stage_runs(pipeline_repo)["evaluate"]
        if "/.dvc/tmp/exps/" in r.data.tags.get("psr.workspace", "")
    ]
    assert len(evaluate_runs) == 1
    assert evaluate_runs[0].data.params["evaluate.tta_repeats"] == "2"
    assert evaluate_runs[0].info.run_name == "evaluate · short"
    experiment = [  # every run of the experiment names it, one execution, the changed params
        r for runs in stage_runs(pipeline_repo).values() for r in runs
        if r.data.tags.get("dvc.exp_name") == "short"
    ]  # fmt: skip
    assert {r.data.tags["dvc.stage"] for r in experiment} >= {"evaluate", "register"}
    assert len({r.data.tags["psr.pipeline_run"] for r in experiment}) == 1
    for r in experiment:
        assert r.data.tags["psr.git.dirty"] == "true"
        assert "params.yaml" in r.data.tags["psr.git.changes"].split(", ")
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))
    shown = json.loads(run([str(BIN / "dvc"), "exp", "show", "--json"], root).stdout)
    assert "short" in json.dumps(shown)


def test_compare_shows_the_columns_people_compare(pipeline_repo: PipelineRepo):
    """``make compare`` (pipeline.compare): the saved baseline and the ``short`` experiment in
    the headline columns only, with real values in every row."""
    root = pipeline_repo.root
    full = run([str(BIN / "dvc"), "exp", "show", "--only-changed", "--md"], root)
    table = run([str(BIN / "python"), "-m", "pipeline.compare", "--md"], root).stdout
    header, _, *rows = [line.strip("|").split("|") for line in table.strip().splitlines()]
    header = [cell.strip() for cell in header]
    assert header == [
        "Experiment",
        "Created",
        "reports/train/metrics.json:best_valid_acc",
        "accuracy",
        "macro_f1",
        "model.name",
        "train.phase1.epochs",
        "train.phase1.lrs",
        "train.phase2.epochs",
        "train.phase2.lrs",
        "evaluate.tta_repeats",  # changed by the short experiment
    ]
    assert len(full.stdout.splitlines()[0].split("|")) > 2 * len(header)  # the point of it
    rows = {c[0].strip(): dict(zip(header, map(str.strip, c), strict=True)) for c in rows}
    short = next(row for name, row in rows.items() if name.endswith("[short]"))
    assert short["evaluate.tta_repeats"] == "2"
    for row in rows.values():  # workspace, the saved baseline (HEAD), the experiment
        assert 0.0 <= float(row["accuracy"]) <= 1.0, row
        assert 0.0 <= float(row["reports/train/metrics.json:best_valid_acc"]) <= 1.0, row
    assert len(rows) == 3


def test_offline_plots_page_draws_every_chart_in_headless_chromium(
    pipeline_repo: PipelineRepo, chromium: str, tmp_path
):
    """``dvc plots diff -o`` (HEAD, saved above, against the workspace) writes a page that loads
    nothing from the network, and headless Chromium with the network unreachable draws every
    chart of dvc.yaml in it; DVC's default page, loading its library from a CDN, draws none."""
    import browser  # tests/pipeline/browser.py
    import yaml
    from dvc_render.base import Renderer
    from dvc_render.html import PAGE_HTML

    root = pipeline_repo.root
    dvc = str(BIN / "dvc")
    run([dvc, "plots", "diff", "-o", str(tmp_path / "plots")], root)
    page = tmp_path / "plots" / "index.html"
    html = page.read_text()
    plots = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    titles = [next(iter(p)) for p in plots if isinstance(p, dict)]  # the rest are images
    urls = browser.resources(html)
    assert len(urls) == 2 * (len(plots) - len(titles))  # each image, of HEAD and workspace
    for url in urls:
        assert (page.parent / url).is_file(), url
    dom = browser.dump_dom(chromium, page)
    charts = browser.vega_charts(dom)
    assert sorted(charts) == sorted(map(Renderer.remove_special_chars, titles))  # DVC's ids
    for name, chart in charts.items():
        assert chart.state == "drawn", (name, chart.texts)
        kinds = ("rect", "text") if name.startswith("Confusion") else ("line",)
        for kind in kinds:
            assert chart.marks[kind] >= 1, (name, chart.marks)
        assert {"HEAD", "workspace"} <= set(chart.texts), (name, chart.texts)
    assert "epoch" in charts["Training_accuracy"].texts
    assert '<p class="psr-failed">' not in dom  # what the page writes for a failed chart

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    run([dvc, "plots", "diff", "-o", str(tmp_path / "cdn"), "--html-template", str(default)], root)
    cdn = browser.dump_dom(chromium, tmp_path / "cdn" / "index.html")
    assert "cdn.jsdelivr.net" in cdn and 'class="marks"' not in cdn


def test_champion_gate(pipeline_repo: PipelineRepo, monkeypatch):
    """A worse model becomes challenger only; a better one takes champion, the old one previous."""
    from pipeline.params import load_params
    from pipeline.stages import register

    root = pipeline_repo.root
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline_repo.tracking_uri)
    mlflow_client = client(pipeline_repo)
    version = mlflow_client.get_model_version_by_alias("psr-fer", "champion")
    champion = str(version.version)
    params = load_params()
    current = float(version.tags["psr.metric.accuracy"])  # the bar the gate compares with

    import mlflow

    mlflow.set_tracking_uri(pipeline_repo.tracking_uri)
    with mlflow.start_run():
        worse = register.register(params, register.CHECKPOINT, current - 0.05)
    assert worse["decision"] == "kept champion"
    assert worse["aliases"]["champion"] == champion
    assert worse["aliases"]["challenger"] == worse["version"]
    with mlflow.start_run():
        better = register.register(params, register.CHECKPOINT, current + 0.05)
    assert better["decision"] == "promoted"
    assert better["aliases"] == {
        "champion": better["version"],
        "challenger": better["version"],
        "previous": champion,
    }


def test_alias_moves_are_all_or_nothing(pipeline_repo: PipelineRepo, monkeypatch):
    from mlflow import MlflowClient

    from pipeline.stages.register import current_aliases, move_aliases

    mlflow_client = client(pipeline_repo)
    before = current_aliases(mlflow_client, "psr-fer")
    calls = []
    original = MlflowClient.set_registered_model_alias

    def flaky(self, name, alias, version):
        calls.append(alias)
        if len(calls) == 2:
            raise RuntimeError("registry went away")
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    with pytest.raises(RuntimeError, match="went away"):
        move_aliases(mlflow_client, "psr-fer", {"challenger": "1", "champion": "1"})
    monkeypatch.undo()
    assert current_aliases(mlflow_client, "psr-fer") == before


def test_served_champion_answers_http(pipeline_repo: PipelineRepo, tmp_path, monkeypatch):
    import mlflow

    from psr.data.prepared import load_split
    from psr.inference import Predictor

    root = pipeline_repo.root
    port = servers.free_port()
    images = np.asarray(load_split(root / "data/prepared/tiny", "test").images[:3])
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/psr-fer@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = tmp_path / "serve.log"
    with servers.background(
        command, root, log, clean_env(MLFLOW_TRACKING_URI=pipeline_repo.tracking_uri)
    ) as server:
        servers.wait_for(f"http://127.0.0.1:{port}/ping", server, log)
        response = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"inputs": images.tolist()},
            timeout=120,
        )
        readme = subprocess.run(  # the request documented in docs/pipeline.md
            [
                "curl",
                "-s",
                f"http://127.0.0.1:{port}/invocations",
                "-H",
                "Content-Type: application/json",
                "-d",
                README_REQUEST,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        bad = {  # payload -> what the 400 must say
            "floats": ((images / 255.0).tolist(), "multiply by 255"),
            "two channels": (np.zeros((1, 8, 8, 2)).tolist(), "got shape [1, 8, 8, 2]"),
        }
        answers = {
            name: requests.post(
                f"http://127.0.0.1:{port}/invocations", json={"inputs": payload}, timeout=300
            )
            for name, (payload, _) in bad.items()
        }
        again = requests.post(  # still serving
            f"http://127.0.0.1:{port}/invocations", json={"inputs": images.tolist()}, timeout=120
        )
    for name, (_, message) in bad.items():
        answer = answers[name]
        assert answer.status_code == 400, (name, answer.text[:2000])
        assert message in answer.json()["message"], (name, answer.text[:2000])
        assert "Traceback" not in answer.text and "site-packages" not in answer.text, name
        assert str(root) not in answer.text, name
    assert again.status_code == 200 and again.json() == response.json()
    assert response.status_code == 200, response.text
    assert len(json.loads(readme.stdout)["predictions"]) == 1, readme.stdout
    rows = response.json()["predictions"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline_repo.tracking_uri)
    mlflow.set_tracking_uri(pipeline_repo.tracking_uri)
    predictor = Predictor.from_uri("models:/psr-fer@champion", detect=False)  # its checkpoint
    assert [list(r) for r in rows] == [list(predictor.class_names)] * len(images)
    served = np.array([[r[name] for name in predictor.class_names] for r in rows])
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served, predictor.probabilities(list(images)), atol=1e-5)


def test_make_serve_refuses_oversized_bodies_and_keeps_serving(
    pipeline_repo: PipelineRepo, tmp_path
):
    """``python -m pipeline.serve`` (``make serve``): the champion with a request body limit."""
    from psr.data.prepared import load_split

    root = pipeline_repo.root
    port = servers.free_port()
    images = np.asarray(load_split(root / "data/prepared/tiny", "test").images[:2])
    command = [str(BIN / "python"), "-m", "pipeline.serve", "--port", str(port)]
    command += ["--max-body-mb", "0.5"]
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}/invocations"
    with servers.background(
        command, root, log, clean_env(MLFLOW_TRACKING_URI=pipeline_repo.tracking_uri)
    ) as server:
        servers.wait_for(f"http://127.0.0.1:{port}/ping", server, log)
        small = requests.post(url, json={"inputs": images.tolist()}, timeout=120)
        large = requests.post(url, json={"inputs": np.zeros((4, 200, 200, 3), int).tolist()})
        chunked = requests.post(  # no Content-Length: counted as it streams
            url,
            data=iter([b'{"inputs": [', b"0, " * 300_000, b"0]}"]),
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        again = requests.post(url, json={"inputs": images.tolist()}, timeout=120)
    assert small.status_code == 200, small.text
    assert len(small.json()["predictions"]) == 2
    for answer in (large, chunked):
        assert answer.status_code == 413, answer.text[:500]
        assert "request body over 0.5 MB" in answer.json()["message"]
    assert again.status_code == 200 and again.json() == small.json()


def test_ablation_runs_every_arm_under_one_parent_and_fills_the_readme(
    pipeline_repo: PipelineRepo,
):
    """The ablation's DVC pipeline: every arm x seed as a DVC matrix stage, the report generated
    from their runs, one MLflow parent, the README block filled; a rerun has nothing to do
    (make ablate's runner of the same stages: tests/pipeline/test_run_ablation.py)."""
    import pandas as pd

    from pipeline.ablation import ARMS

    root = pipeline_repo.root
    first = run([str(BIN / "dvc"), "repro", "ablation/dvc.yaml"], root, timeout=1200)
    for arm in ARMS:
        assert f"Running stage 'ablation/dvc.yaml:arm@{arm}-0'" in first.stdout
    assert "Running stage 'train'" not in first.stdout  # the main pipeline was up to date
    summary = root / "reports/ablation/summary"
    runs = pd.read_csv(summary / "runs.csv").set_index("arm")
    assert list(runs.index) == [a for a in ARMS if a != "psr_deep"]  # S=64 cannot carry it
    results = (summary / "results.md").read_text()
    assert "| `psr_deep` |" in results and "skipped: image_size=64" in results
    for arm in runs.index:  # every cell comes from that run's metrics.json
        metrics = json.loads((root / f"reports/ablation/runs/{arm}-seed0/metrics.json").read_text())
        assert f"| `{arm}` | {ARMS[arm].description} | {metrics['accuracy']:.4f} ± 0.0000 |" in (
            results
        )
    sizes = runs["parameters"]
    assert sizes["small_cnn"] < sizes["vgg16_ce"] == sizes["vgg16_pdls"] < sizes["pyramid_bicubic"]
    assert sizes["pyramid_bicubic"] < sizes["pyramid_sr"] < sizes["psr"]  # + EDSR, + STN
    by_size = pd.read_csv(summary / "by_resolution.csv")
    assert by_size.groupby("arm")["group"].apply(tuple).nunique() == 1  # same buckets per arm
    assert (summary / "accuracy_by_resolution.png").stat().st_size > 10_000
    assert by_size["truth_mean"].between(0, 1).all()  # scored against the rendered expression
    assert (summary / "accuracy_by_resolution_vs_true_label.png").stat().st_size > 10_000

    mlflow_client = client(pipeline_repo)
    parents = set(runs["parent_run_id"])
    assert len(parents) == 1
    parent = mlflow_client.get_run(parents.pop())
    assert parent.info.run_name == "ablation"
    children = stage_runs(pipeline_repo)["ablate"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.run_name for r in children) == sorted(f"{a}-seed0" for a in runs.index)
    assert parent.data.metrics["psr.accuracy_mean"] == pytest.approx(runs.loc["psr", "accuracy"])
    artifacts = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "ablation")}
    assert "ablation/results.md" in artifacts

    run([sys.executable, "-m", "pipeline.readme"], root)
    readme = (root / "README.md").read_text()
    assert results.splitlines()[2] in readme  # the table's header row
    assert "(docs/generated/ablation-accuracy_by_resolution.png)" in readme
    assert (root / "docs/generated/ablation-accuracy_by_resolution.png").is_file()
    run([sys.executable, "-m", "pipeline.readme", "--check"], root)
    second = run([str(BIN / "dvc"), "repro", "ablation/dvc.yaml"], root)
    assert "Running stage" not in second.stdout


def test_stage_progress_in_a_log_is_plain_lines(pipeline_repo: PipelineRepo):
    """`dvc repro` with its output captured (not a terminal): each stage says it started before
    its slow imports, and the long steps print whole progress lines, no redrawn bar."""
    err = pipeline_repo.repro.stderr
    for stage in ("validate", "sr_pretrain", "train"):
        assert f"stage {stage}: starting" in err
    assert "\r" not in err
    assert "epochs: 3/3 epoch (100%)" in err  # train.phase1 + phase2 epochs
    assert "sr_pretrain: 4/4 step (100%)" in err
    assert "tune trials: 5/5 trial (100%)" in err


def _drop_from_lock(root: Path, stages: tuple[str, ...]) -> None:
    """Forget ``stages`` in dvc.lock: the next repro restores them from the run-cache and
    writes dvc.lock again (DVC's `git add` hint, once per stage)."""
    import yaml

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in stages:
        del lock["stages"][stage]
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def test_prefect_deployment_run_completes(pipeline_repo: PipelineRepo, tmp_path):
    """prefect.yaml deployed to a real local server; `make prefect-worker` runs psr-pipeline
    (two stages restored from DVC's run-cache, the rest up to date), psr-tune (two parallel
    Optuna workers) and psr-ablate, and stops on a SIGTERM to make."""
    root = pipeline_repo.root
    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    prefect = str(BIN / "prefect")
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server_cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    _drop_from_lock(root, ("validate", "priors"))
    with servers.background(server_cmd, root, server_log, clean_env(**env)) as server:
        servers.wait_for(f"{api}/health", server, server_log)
        run([prefect, "work-pool", "create", "psr-process", "--type", "process"], root, **env)
        run([prefect, "--no-prompt", "deploy", "--name", "local"], root, timeout=300, **env)
        venv = BIN.parent  # the Makefile's verb, with this venv taken as installed
        worker_cmd = ["make", f"VENV={venv}", "-o", f"{venv}/.installed", "prefect-worker"]
        polled = clean_env(**env, PREFECT_WORKER_QUERY_SECONDS="1")  # not every 10 s: test time
        with servers.background(worker_cmd, root, worker_log, polled) as worker:
            result = run(
                [prefect, "deployment", "run", "psr-pipeline/local", *WATCH],
                root,
                timeout=900,
                **env,
            )
            tune_cmd = [prefect, "deployment", "run", "psr-tune/local", *WATCH]
            tuned = run(
                [*tune_cmd, "-p", "workers=2", "-p", "n_trials=2"],
                root,
                timeout=900,
                **env,
            )
            ablated = run(  # up to date after the ablation test: DVC skips every arm
                [prefect, "deployment", "run", "psr-ablate/local", *WATCH],
                root,
                timeout=900,
                **env,
            )
            worker.send_signal(signal.SIGTERM)  # `kill <make's pid>`: make passes it on
            worker.wait(timeout=120)  # the worker's graceful stop took over 30 s under load
            assert _group_gone(worker.pid, timeout=60), worker_log.read_text()[-4000:]
        runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        artifacts = requests.post(f"{api}/artifacts/filter", json={}, timeout=30).json()
        limits = requests.post(f"{api}/v2/concurrency_limits/filter", json={}, timeout=30).json()
        deployments = requests.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    states = {r["name"]: r["state"]["type"] for r in runs}
    assert sorted(states.values()) == ["COMPLETED"] * 3, (
        result.stdout,
        tuned.stdout,
        ablated.stdout,
    )
    report = next(a for a in artifacts if a["key"] == "psr-pipeline-report")
    assert "| evaluate | accuracy |" in report["data"]
    assert "Model registry" in report["data"]
    assert any(a["key"] == "psr-tune-report" for a in artifacts)
    ablation = next(a for a in artifacts if a["key"] == "psr-ablation")
    assert "| `psr` | + STN = PSR |" in ablation["data"]
    # the two workers' trials share one journal study and nest under one MLflow run
    assert (root / "optuna.journal").is_file()
    parallel = [r for r in stage_runs(pipeline_repo)["tune"] if r.info.run_name == "tune-parallel"]
    assert len(parallel) == 1
    nested = [
        r
        for r in stage_runs(pipeline_repo)["tune"]
        if r.data.tags.get("mlflow.parentRunId") == parallel[0].info.run_id
    ]
    assert len(nested) >= 2
    flow_runs = {r["id"] for r in runs}  # the trials name the psr-tune flow run they ran in
    assert {r.data.tags["prefect.flow_run_id"] for r in nested} <= flow_runs
    assert {r.data.tags["psr.pipeline_run"] for r in nested} == {
        f"prefect-{r.data.tags['prefect.flow_run_id']}" for r in nested
    }
    # DVC's hint once per flow run, not once per stage that changed dvc.lock
    logged = worker_log.read_text()
    assert logged.count("To track the changes with git") == 1, logged[-6000:]
    assert "git add dvc.lock" in logged and "autostage" not in logged
    lock = (root / "dvc.lock").read_text()
    assert "\n  validate:" in lock and "\n  priors:" in lock
    # timeouts: every stage command's, and a parameter of every deployment
    assert "repro --single-item train (timeout 1 day, 0:00:00)" in logged
    for deployment in deployments:
        assert "timeouts" in deployment["parameter_openapi_schema"]["properties"]
    # the flows created the gpu tag limit: one GPU job at a time
    gpu = next(limit for limit in limits if limit["name"] == "tag:gpu")
    assert (gpu["limit"], gpu["active_slots"]) == (1, 0)


def _group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of group ``pgid`` exits within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False
