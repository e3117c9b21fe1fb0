"""The pipeline against a real MLflow tracking server (``make mlflow-server``): the stages log
their runs to it, the registry is on it, the artifacts are stored by it (proxied, not in the
workspace), ``psr predict`` and ``mlflow models serve`` load the champion from it, and a
password in the tracking URI or in ``tune.storage`` is in no log, run, record or report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import servers  # tests/pipeline/servers.py

from pipeline import mlflow_server

BIN = Path(sys.executable).parent
SECRET = "pw-7f3a9c"  # in the tracking URI and in tune.storage; must be shown nowhere
STAGES = ("priors", "sr_pretrain", "tune", "train", "evaluate", "register")


def test_the_command_is_mlflow_server_with_proxied_artifacts(tmp_path):
    line = mlflow_server.command("127.0.0.1", 5000, "/x/artifacts")
    assert line[0] == str(BIN / "mlflow") and line[1] == "server"
    assert line[line.index("--host") + 1] == "127.0.0.1"
    assert line[line.index("--artifacts-destination") + 1] == "/x/artifacts"
    assert "--workers" not in line and "--backend-store-uri" not in line
    assert mlflow_server.local_folder("sqlite:////x/m.db") == Path("/x")
    assert mlflow_server.local_folder("/x/artifacts") == Path("/x/artifacts")
    assert mlflow_server.local_folder("s3://bucket/psr") is None
    assert mlflow_server.local_folder("postgresql+psycopg://u@h/db") is None


def test_the_backend_reaches_the_server_in_its_environment_not_its_command_line(
    monkeypatch, capsys
):
    """``ps`` shows a command line to every user of the machine; a backend URI may hold a
    password. make passes MLFLOW_BACKEND in the environment, and so does this module."""
    backend = f"postgresql+psycopg://mlflow:{SECRET}@db.internal/mlflow"
    monkeypatch.setenv("MLFLOW_BACKEND", backend)
    monkeypatch.setenv("MLFLOW_ARTIFACTS", "s3://bucket/psr")
    started = {}
    monkeypatch.setattr(
        mlflow_server.os, "execve", lambda path, line, env: started.update(line=line, env=env)
    )
    mlflow_server.main(["--port", "5002"])
    assert started["env"][mlflow_server.BACKEND_VARIABLE] == backend
    assert not any(SECRET in part for part in started["line"])
    assert (
        started["line"][started["line"].index("--artifacts-destination") + 1] == "s3://bucket/psr"
    )
    assert SECRET not in capsys.readouterr().out  # shown masked


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--port", "0"], "--port 0: expected 1 to 65535"), (["--workers", "0"], "--workers 0")],
)
def test_bad_arguments_are_named(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        mlflow_server.main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _files_with(root: Path, secret: bytes, skip: set[Path]) -> list[Path]:
    return [
        p for p in root.rglob("*") if p.is_file() and p not in skip and secret in p.read_bytes()
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_stages_registry_predict_and_serve_through_a_tracking_server(
    workspace, stage, stage_env, tmp_path
):
    import cv2
    from mlflow import MlflowClient

    from pipeline.params import set_params
    from psr.data.prepared import load_split

    store = tmp_path / "server"
    store.mkdir()
    port = servers.free_port()
    bare = f"http://127.0.0.1:{port}"
    uri = f"http://psr:{SECRET}@127.0.0.1:{port}"  # the server ignores it: no auth configured
    storage = f"postgresql://psr:{SECRET}@127.0.0.1:1/optuna"  # tune is off: never opened
    params_file = workspace / "params.yaml"
    original = params_file.read_text()
    set_params(
        params_file,
        ["tune.enabled=false", f"tune.storage={storage}", "register.baseline_margin=null"],
    )
    server = servers.mlflow_server(store, port, stage_env())
    try:
        logs = {name: _ok(stage(name, MLFLOW_TRACKING_URI=uri)) for name in STAGES}

        images = np.asarray(load_split(workspace / "data/prepared/tiny", "test").images[:2])
        faces = tmp_path / "faces"
        faces.mkdir()
        for i, image in enumerate(images):
            cv2.imwrite(str(faces / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        predicted = tmp_path / "predicted.json"
        command = [str(BIN / "psr"), "predict", str(faces), "--no-detect", "--device", "cpu"]
        command += ["--model-uri", "models:/psr-fer@champion", "--json", str(predicted)]
        predict = subprocess.run(
            command,
            cwd=tmp_path,
            env=stage_env(MLFLOW_TRACKING_URI=uri),
            capture_output=True,
            text=True,
            timeout=300,
        )

        serve_port = servers.free_port()
        command = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/psr-fer@champion"]
        command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(serve_port)]
        serve_log = tmp_path / "serve.log"
        with servers.background(
            command, tmp_path, serve_log, stage_env(MLFLOW_TRACKING_URI=uri)
        ) as scoring:
            servers.wait_for(f"http://127.0.0.1:{serve_port}/ping", scoring, serve_log)
            served = requests.post(
                f"http://127.0.0.1:{serve_port}/invocations",
                json={"inputs": images.tolist()},
                timeout=120,
            )

        client = MlflowClient(tracking_uri=bare, registry_uri=bare)
        assert predict.returncode == 0, predict.stderr[-4000:]
        assert served.status_code == 200, served.text[:2000]
        assert len(served.json()["predictions"]) == len(images)
        records = json.loads(predicted.read_text())
        assert len(records) == len(images), records

        # the runs, their artifacts and the registered model are the server's
        experiment = client.get_experiment_by_name("psr-tiny")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = {
            r.data.tags["dvc.stage"]: r
            for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("dvc.stage") in STAGES
        }
        assert set(runs) == set(STAGES)
        assert {r.info.status for r in runs.values()} == {"FINISHED"}
        for name in ("train", "evaluate"):
            record = json.loads((workspace / f"reports/{name}/mlflow_run.json").read_text())
            assert record["run_id"] == runs[name].info.run_id and record["tracking_uri"] == bare
        assert json.loads((workspace / "reports/registry.json").read_text())["tracking_uri"] == bare
        version = client.get_model_version_by_alias("psr-fer", "champion")
        assert version.run_id == runs["register"].info.run_id
        train_id = runs["train"].info.run_id
        stored = store / "server-artifacts"
        assert [p for p in stored.rglob("*") if train_id in p.parts and p.is_file()]
        assert not [p for p in workspace.rglob(train_id) if p.exists()]  # nothing in the workspace
        assert (stored / experiment.experiment_id / "models").is_dir()  # the logged model's files

        # the password: in no log, parameter, tag, record, report or stored file
        assert runs["tune"].data.params["tune.storage"] == "postgresql://psr:***@127.0.0.1:1/optuna"
        for name, result in logs.items():
            assert SECRET not in result.stdout + result.stderr, name
        assert f"{bare}/#/experiments/{experiment.experiment_id}" in logs["train"].stdout
        assert SECRET not in predict.stdout + predict.stderr + serve_log.read_text()
        for run in runs.values():
            assert SECRET not in json.dumps([run.data.params, run.data.tags]), run.info.run_name
        assert _files_with(workspace, SECRET.encode(), {params_file}) == []
        assert _files_with(store, SECRET.encode(), set()) == []
    finally:
        servers.stop(server)
        params_file.write_text(original)
