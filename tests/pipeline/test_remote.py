"""``make push`` / ``make pull`` (pipeline/remote.py): the remote chosen, the DVC command, the
refusal without dvc.lock and credentials masked in what is printed. The round trip with the real
DVC between two clones is in test_e2e.py (``test_a_second_clone_pulls_...``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_repo import BIN, REPO, clean_env  # tests/pipeline/dvc_repo.py

from pipeline import remote

CONFIG = """[core]
    remote = local
['remote "local"']
    url = ~/.cache/psr-fer/dvc-remote
['remote "ssh"']
    url = ssh://alice:s3cret@example.invalid/srv/dvc
"""


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A folder with .dvc/config (the default remote and an SSH one), no user DVC config."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(CONFIG)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_committed_default_is_a_directory_outside_the_repository():
    name, url = remote.remote(REPO)
    assert name == "local"
    assert url == os.path.expanduser("~/.cache/psr-fer/dvc-remote")
    assert not Path(url).is_relative_to(REPO)


def test_remote_reads_the_default_the_named_and_the_local_override(repo):
    assert remote.remote(repo) == ("local", str(repo / "home/.cache/psr-fer/dvc-remote"))
    assert remote.remote(repo, "ssh")[1] == "ssh://alice:s3cret@example.invalid/srv/dvc"
    (repo / ".dvc" / "config.local").write_text("['remote \"local\"']\n    url = /mnt/shared/dvc\n")
    assert remote.remote(repo) == ("local", "/mnt/shared/dvc")


def test_remote_names_the_file_when_there_is_no_such_remote(repo):
    with pytest.raises(remote.RemoteError, match=r"\.dvc/config: no remote 'nas' \(configured: "):
        remote.remote(repo, "nas")
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    with pytest.raises(remote.RemoteError, match=r"no default remote \(core\.remote\)"):
        remote.remote(repo)


def test_an_invalid_config_is_an_error_naming_it(repo):
    (repo / ".dvc" / "config").write_text("[core]\n    remote = local\n    nonsense = 1\n")
    with pytest.raises(remote.RemoteError, match=r"^\.dvc/config \(or .*nonsense"):
        remote.remote(repo)


def test_pull_needs_a_lock_push_does_not(repo):
    with pytest.raises(remote.RemoteError, match=r"dvc\.lock: none"):
        remote.command("pull", repo, [])
    assert remote.command("push", repo, ["-j", "4"]) == [
        sys.executable, "-m", "dvc", "push", "--run-cache", "-j", "4"
    ]  # fmt: skip


def test_pull_targets_only_the_pipelines_that_have_a_lock(repo):
    """A pipeline without dvc.lock names no output: DVC's plain pull fails its checkout."""
    assert (Path("dvc.yaml"), Path("ablation/dvc.yaml")) == remote.PIPELINES
    (repo / "ablation").mkdir()
    (repo / "ablation" / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert remote.command("pull", repo, [])[3:] == ["pull", "--run-cache", "ablation/dvc.yaml"]
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert remote.command("pull", repo, ["-j", "2"])[3:] == [
        "pull", "--run-cache", "-j", "2", "dvc.yaml", "ablation/dvc.yaml"
    ]  # fmt: skip


def test_main_prints_the_masked_url_and_runs_dvc(repo, monkeypatch, capsys):
    calls = []

    def fake_run(command, cwd):
        calls.append((command, cwd))
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(remote.subprocess, "run", fake_run)
    assert remote.main(["push", "-r", "ssh", "--jobs", "2"]) == 3  # DVC's exit status
    out = capsys.readouterr().out
    assert out == "dvc push --run-cache to remote 'ssh' (ssh://alice:***@example.invalid/srv/dvc)\n"
    assert calls == [([sys.executable, "-m", "dvc", "push", "--run-cache", "--jobs", "2",
                       "-r", "ssh"], repo)]  # fmt: skip


def test_main_refuses_a_pull_without_lock_before_running_anything(repo, monkeypatch, capsys):
    monkeypatch.setattr(remote.subprocess, "run", lambda *a, **k: pytest.fail("ran DVC"))
    assert remote.main(["pull"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("make pull: dvc.lock: none, so no output is named to pull")
    assert "dvc repro --pull" in err


def test_documented_local_credentials_stay_out_of_the_committed_config(tmp_path):
    """docs/pipeline.md's ``dvc remote modify --local``: the secret lands in .dvc/config.local,
    which git ignores; .dvc/config is unchanged."""
    dvc = str(BIN / "dvc")
    env = clean_env(HOME=str(tmp_path / "home"))
    for command in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    add = [dvc, "remote", "add", "-d", "storage", "ssh://example.invalid/srv/psr-fer"]
    subprocess.run(add, cwd=tmp_path, env=env, check=True, capture_output=True)
    committed = (tmp_path / ".dvc" / "config").read_text()
    secret = [dvc, "remote", "modify", "--local", "storage", "password", "s3cret"]
    subprocess.run(secret, cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / ".dvc" / "config").read_text() == committed
    assert "s3cret" in (tmp_path / ".dvc" / "config.local").read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", ".dvc/config.local"], cwd=tmp_path, env=env, capture_output=True
    )
    assert ignored.returncode == 0
