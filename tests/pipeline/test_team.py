"""The ``team`` deployments (prefect.yaml, pipeline/team.py): a real local Prefect server, a
`process` worker started in an empty folder, the repository cloned at the deployed commit from a
``file://`` URL, requirements checked and ``dvc pull`` from a local DVC remote; and the pull
step's pieces alone."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests
import servers  # tests/pipeline/servers.py
import yaml
from dvc_repo import BIN, REPO, clean_env, copy_repository, run  # tests/pipeline/dvc_repo.py
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipeline import flows, team
from pipeline.params import set_params

PREFECT = str(BIN / "prefect")
DVC = str(BIN / "dvc")


def test_requirements_met_here_and_unmet_ones_named(tmp_path):
    assert team.unmet(team.requirements(REPO / "pyproject.toml")) == []
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["pyyaml>=6", "pyyaml<1", "no-such-dist-psr==1",'
        " \"pyyaml<1; python_version < '3'\"]\n"
    )
    missing = team.unmet(team.requirements(tmp_path / "pyproject.toml"))
    assert [str(r) for r in missing] == ["pyyaml<1", "no-such-dist-psr==1"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[project]\nname = "x"\n', "no readable \\[project\\].dependencies"),
        ('[project]\ndependencies = ["torch=="]\n', "\\[project\\].dependencies: 'torch==':"),
        ("[project\n", "no readable"),
    ],
)
def test_a_bad_pyproject_is_named(tmp_path, text, error):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ValueError, match=f"pyproject.toml: {error}"):
        team.requirements(tmp_path / "pyproject.toml")


def test_no_default_remote_pulls_nothing_and_says_so(tmp_path, capsys):
    run(["git", "init", "-q"], tmp_path)
    run([DVC, "init", "-q"], tmp_path)
    assert team.default_remote(tmp_path) is None
    assert team.pull(tmp_path) is False
    assert "no default DVC remote" in capsys.readouterr().out


def test_a_failing_remote_is_an_error_naming_it(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    run([DVC, "init", "-q"], tmp_path)
    (tmp_path / "a.txt").write_text("a")
    run([DVC, "add", "-q", "a.txt"], tmp_path)
    run([DVC, "remote", "add", "-d", "store", str(tmp_path / "absent")], tmp_path)
    (tmp_path / "a.txt").unlink()
    run([DVC, "cache", "dir", str(tmp_path / "empty-cache")], tmp_path)  # nothing local
    assert team.pull(tmp_path) is False  # no dvc.lock: nothing to pull
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: python -c \"open('b.txt', 'w').write('b')\"\n    outs: [b.txt]\n"
    )
    run([DVC, "repro", "-q"], tmp_path)
    run(["git", "add", "dvc.lock"], tmp_path)
    (tmp_path / "b.txt").unlink()
    run([DVC, "cache", "dir", str(tmp_path / "another-empty-cache")], tmp_path)
    assert team.locked_stages(tmp_path) == ["a"]
    with pytest.raises(RuntimeError, match="dvc pull from remote 'store' failed"):
        team.pull(tmp_path)


def test_gpu_stages_are_tagged_and_retried_but_not_after_a_timeout():
    from prefect.states import Failed

    train, download = flows.stage_task("train"), flows.stage_task("download")
    arm = flows.stage_task("ablation/dvc.yaml:arm@psr-0", task_run_name="psr-0")
    assert train.tags == arm.tags == {flows.GPU_TAG} and download.tags == set()
    assert (train.retries, download.retries, flows.stage_task("validate").retries) == (1, 2, 0)
    assert flows.GPU_LIMIT == "tag:gpu"  # the name Prefect gives tag limits
    retry = train.retry_condition_fn
    assert retry(train, None, Failed(data=RuntimeError("exit 1")))
    assert not retry(train, None, Failed(data=TimeoutError("ran past its timeout")))


def test_prefect_yaml_team_and_docker_deployments():
    """The definitions `prefect deploy` reads: team deployments pin a commit and clone it,
    the docker one asks for the host's GPUs in the job variables prefect-docker takes."""
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_name: dict[str, list] = {}
    for deployment in config["deployments"]:
        by_name.setdefault(deployment["name"], []).append(deployment)
    assert [d["entrypoint"].split(":")[1] for d in by_name["local"]] == [
        "psr_pipeline", "psr_tune", "psr_ablate"
    ]  # fmt: skip
    for deployment in by_name["local"]:  # as before: this checkout, the process pool
        assert "pull" not in deployment and deployment["work_pool"]["name"] == "psr-process"
    for deployment in by_name["team"] + by_name["docker"]:
        clone = deployment["pull"][1]["prefect.deployments.steps.git_clone"]
        assert clone["commit_sha"] == "{{ pin.stdout }}"
        assert deployment["build"][0]["prefect.deployments.steps.run_shell_script"]["id"] == "pin"
    (docker,) = by_name["docker"]
    variables = docker["work_pool"]["job_variables"]
    known = {"image", "image_pull_policy", "auto_remove", "stream_output", "env", "volumes"}
    assert set(variables) <= known | {"container_create_kwargs"}
    (request,) = variables["container_create_kwargs"]["device_requests"]
    assert request["capabilities"] == [["gpu"]] and request["driver"] == "nvidia"


def _flow_run(api: str, triggered: subprocess.CompletedProcess) -> dict:
    """The flow run `prefect deployment run` created (its output names its UUID)."""
    found = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout)
    assert found, triggered.stdout + triggered.stderr
    return requests.get(f"{api}/flow_runs/{found[1]}", timeout=30).json()


def _logs(api: str, flow_run_id: str) -> str:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    return "\n".join(r["message"] for r in requests.post(f"{api}/logs/filter", json=body).json())


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_in_an_empty_folder_runs_the_deployed_commit(tmp_path):
    # the team's repository: validate's outputs run and pushed to its DVC remote, committed
    origin = copy_repository(tmp_path / "origin", [])
    remote = tmp_path / "dvc-remote"
    run([DVC, "remote", "add", "-f", "-d", "team", str(remote)], origin)
    run([DVC, "repro", "--single-item", "validate"], origin, timeout=300)
    run([DVC, "push", "-q"], origin)
    run(["git", "add", ".dvc/config", "dvc.lock"], origin)
    run(["git", "commit", "-q", "-m", "validate, pushed"], origin)
    pinned = run(["git", "rev-parse", "HEAD"], origin).stdout.strip()

    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect")}
    server_cmd = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server_log = tmp_path / "server.log"
    with servers.background(server_cmd, tmp_path, server_log, clean_env(**env)) as server:
        servers.wait_for(f"{api}/health", server, server_log)
        run([PREFECT, "variable", "set", "psr_git_url", origin.as_uri()], tmp_path, **env)
        run([PREFECT, "work-pool", "create", "psr-team", "--type", "process"], tmp_path, **env)
        run([PREFECT, "--no-prompt", "deploy", "--name", "team"], origin, timeout=300, **env)
        # the docker example registers on a docker pool (no Docker needed until a worker runs)
        run([PREFECT, "work-pool", "create", "psr-docker", "--type", "docker"], tmp_path, **env)
        run([PREFECT, "--no-prompt", "deploy", "--name", "docker"], origin, timeout=300, **env)
        deployed = requests.post(f"{api}/deployments/filter", json={}, timeout=30).json()
        # the tip moves on: a worker that cloned it would rerun validate
        set_params(origin / "params.yaml", ["download.synth.train=97"])
        run(["git", "commit", "-q", "-am", "more faces"], origin)
        assert run(["git", "rev-parse", "HEAD"], origin).stdout.strip() != pinned

        folder, runs, unset_runs = tmp_path / "worker", tmp_path / "runs", tmp_path / "unset"
        for made in (folder, runs, unset_runs):
            made.mkdir()
        worker_log = tmp_path / "worker.log"
        worker_env = {**env, "PREFECT_HOME": str(folder / ".prefect"), "PYTHONPATH": ""}
        worker_env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # not every 10 s: test time
        worker_cmd = [PREFECT, "worker", "start", "--pool", "psr-team", "--type", "process"]
        # stopped on exit
        with servers.background(worker_cmd, folder, worker_log, clean_env(**worker_env)):
            trigger = [
                PREFECT,
                "deployment",
                "run",
                "psr-pipeline/team",
                "--watch",
                "--watch-interval",
                "1",
            ]
            ran = subprocess.run(
                [*trigger, "-p", 'stages=["validate"]', "-jv", f"working_dir={runs}"],
                cwd=tmp_path,
                env=clean_env(**env),
                capture_output=True,
                text=True,
                timeout=600,
            )
            run([PREFECT, "variable", "unset", "psr_git_url"], tmp_path, **env)
            unset = subprocess.run(
                [*trigger, "-jv", f"working_dir={unset_runs}"],
                cwd=tmp_path,
                env=clean_env(**env),
                capture_output=True,
                text=True,
                timeout=300,
            )
        logged = worker_log.read_text()
        completed, failed = (_flow_run(api, r) for r in (ran, unset))
        run_logs = _logs(api, completed["id"])
        limits = requests.post(f"{api}/v2/concurrency_limits/filter", json={}, timeout=30).json()
        with temporary_settings({PREFECT_API_URL: api}), flows.gpu_slot():  # psr-tune's workers
            held = requests.post(f"{api}/v2/concurrency_limits/filter", json={}, timeout=30)
    assert completed["state"]["type"] == "COMPLETED", (ran.stdout[-3000:], logged[-6000:])
    clone = runs / "psr-fer"
    assert run(["git", "rev-parse", "HEAD"], clone).stdout.strip() == pinned
    # dvc pull brought validate's outputs: the stage found them up to date
    assert "psr: this Python has every requirement" in logged
    assert "psr: dvc pull from the default DVC remote 'team': validate" in logged
    assert "Stage 'validate' didn't change, skipping" in run_logs, run_logs[-4000:]
    resolved = json.loads((clone / "reports/validate/params.json").read_text())
    assert resolved["download"]["synth"]["train"] == 3000  # the pinned commit's params
    assert sorted(p.name for p in folder.iterdir()) == [".prefect"]  # no checkout there
    by_name = {(d["name"], d["work_pool_name"]) for d in deployed}
    assert by_name == {("team", "psr-team"), ("docker", "psr-docker")}
    assert len(deployed) == 4  # psr-pipeline, psr-tune, psr-ablate /team; psr-pipeline/docker
    for deployment in deployed:
        clone = deployment["pull_steps"][1]["prefect.deployments.steps.git_clone"]
        assert clone["commit_sha"] == pinned  # pinned at deploy time
        assert clone["repository"] == "{{ prefect.variables.psr_git_url }}"  # read on the worker
    (docker,) = (d for d in deployed if d["name"] == "docker")
    (gpus,) = docker["job_variables"]["container_create_kwargs"]["device_requests"]
    assert gpus == {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
    gpu = next(limit for limit in limits if limit["name"] == flows.GPU_LIMIT)
    assert (gpu["limit"], gpu["active_slots"]) == (flows.GPU_SLOTS, 0)
    held_gpu = next(limit for limit in held.json() if limit["name"] == flows.GPU_LIMIT)
    assert held_gpu["active_slots"] == 1  # the same limit as the tagged tasks'
    # no psr_git_url: the flow run fails before cloning; the worker's log says what to set
    assert failed["state"]["type"] in {"FAILED", "CRASHED"}
    assert "psr_git_url (the repository to clone) is not set: prefect variable set" in logged
    assert list(unset_runs.iterdir()) == []
