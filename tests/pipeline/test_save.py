"""pipeline.save (``make save``) on a real git repository; DVC's part (``dvc status``) is
replaced here and exercised by tests/pipeline/test_e2e.py on a real run."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from pipeline import save


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A committed project (dvc.yaml, params.yaml, one stage's code) that has just run: an
    uncommitted dvc.lock naming that code, and the run's metrics."""
    for who in ("AUTHOR", "COMMITTER"):  # git commit needs an identity
        monkeypatch.setenv(f"GIT_{who}_NAME", "psr-test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "psr-test@example.invalid")
    monkeypatch.setattr(save, "stale_stages", lambda root: [])
    (tmp_path / "psr").mkdir()
    (tmp_path / "psr" / "train.py").write_text("EPOCHS = 1\n")
    (tmp_path / "notes.txt").write_text("not the pipeline's\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python -m psr.train\n")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 2\n  lrs: [0.1, 0.2]\n")
    (tmp_path / ".gitignore").write_text("/reports/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "project")
    lock = {"schema": "2.0", "stages": {"train": {"deps": [{"path": "psr/train.py"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    for path, data in (
        (save.EVALUATE_METRICS, {"accuracy": 0.456789, "macro_f1": 0.4, "variant": "tta"}),
        (save.TRAIN_METRICS, {"best_valid_acc": 0.5}),
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(data))
    return tmp_path


def test_changed_params_compares_flattened_values():
    before = "train:\n  epochs: 2\n  lrs: [0.1, 0.2]\nmodel: {width: 0.5}\n"
    after = "train:\n  epochs: 20\n  lrs: [0.1, 0.2]\n  seed: 1\n"
    assert save.changed_params(before, after) == {
        "model.width": (0.5, None),
        "train.epochs": (2, 20),
        "train.seed": (None, 1),
    }
    assert save.changed_params(None, "a: 1\n") == {"a": (None, 1)}
    assert save.changed_params(before, before) == {}


def test_message_names_metrics_and_changed_params():
    params = {f"train.p{i}": (i, i + 1) for i in range(5)}
    text = save.message([("test accuracy", 0.45678), ("macro-F1", 0.4)], params)
    subject, blank, *body = text.splitlines()
    assert subject == (
        "Run: test accuracy 0.4568, macro-F1 0.4000 (train.p0=1, train.p1=2, train.p2=3, +2 more)"
    )
    assert blank == "" and body[:5] == [f"train.p{i}: {i} -> {i + 1}" for i in range(5)]
    assert save.message([], {}).startswith("Run: no metrics yet (params.yaml as committed)\n")


def test_save_commits_the_lock_params_and_changed_code_only(repo):
    (repo / "psr" / "train.py").write_text("EPOCHS = 2\n")
    (repo / "params.yaml").write_text("train:\n  epochs: 20\n  lrs: [0.1, 0.2]\n")
    (repo / "notes.txt").write_text("edited, not a dependency\n")
    assert save.hint(repo) == save.HINT
    commit = save.save(repo)
    shown = git(repo, "show", "--name-only", "--format=%h%n%B", "HEAD").stdout
    assert shown.startswith(f"{commit}\nRun: test accuracy 0.4568, macro-F1 0.4000, ")
    assert "valid accuracy 0.5000 (train.epochs=20)" in shown
    assert "train.epochs: 2 -> 20" in shown
    assert shown.rstrip().splitlines()[-3:] == ["dvc.lock", "params.yaml", "psr/train.py"]
    assert git(repo, "status", "--porcelain").stdout == " M notes.txt\n"
    assert save.hint(repo) is None
    with pytest.raises(save.SaveError, match=rf"nothing to save: HEAD \({commit}\) already"):
        save.save(repo)


def test_save_uses_the_given_message(repo):
    save.save(repo, "baseline before the lr sweep")
    assert git(repo, "log", "-1", "--format=%B").stdout.strip() == "baseline before the lr sweep"


def test_refusals_say_why(repo, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setattr(save, "stale_stages", lambda root: ["evaluate", "train"])
    with pytest.raises(save.SaveError, match=r"not up to date \(evaluate, train: changed"):
        save.save(repo)
    (repo / "dvc.lock").unlink()
    with pytest.raises(save.SaveError, match=r"dvc\.lock: none yet, nothing has run: `make run`"):
        save.save(repo)
    assert save.hint(repo) is None
    bare = tmp_path_factory.mktemp("not-git")
    with pytest.raises(save.SaveError, match="is not a git repository"):
        save.save(bare)
    monkeypatch.chdir(bare)
    assert save.main([]) == 1
    assert capsys.readouterr().err.startswith("make save: ")
    assert save.main(["--hint"]) == 0 and capsys.readouterr().out == ""
