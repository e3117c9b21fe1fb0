"""pipeline.compare (``make compare``): its column patterns, applied the way ``dvc exp show``
applies them (dvc.commands.experiments.show); the real table is checked in test_e2e.py."""

from __future__ import annotations

import re

import pytest

from pipeline import compare

SECTIONS = ["prepare", "model", "train", "evaluate"]


def test_keep_protects_the_headline_columns_only():
    keep = re.compile(compare.keep_pattern())
    kept = [
        "Experiment",
        "Created",
        "accuracy",
        "reports/evaluate/metrics.json:accuracy",
        "macro_f1",
        "best_valid_acc",
        "reports/train/metrics.json:best_valid_acc",
        "model.name",
        "train.phase1.epochs",
        "train.phase2.lrs",
    ]
    others = [
        "accuracy_std",
        "pooled_accuracy",
        "branch_accuracy_low",
        "precision_neutral",
        "reports/tune/metrics.json:best_valid_acc",
        "test_definitions.majority.accuracy",
        "model.name_suffix",
        "train.phase1.epochs_extra",
        "models/psr/best.pt",
    ]
    assert [c for c in kept if keep.match(c)] == kept
    assert [c for c in others if keep.match(c)] == []


def test_drop_removes_everything_but_parameters():
    drop = re.compile(compare.drop_pattern(SECTIONS))
    params = ["train.phase1.epochs", "model.width", "prepare.name", "evaluate.tta"]
    others = ["accuracy", "precision_neutral", "reports/tune/metrics.json:best_valid_acc"]
    others += ["data/prepared", "psr/engine", "params.yaml", "trainer.x", "Created"]
    assert [c for c in params if drop.match(c)] == []
    assert [c for c in others if drop.match(c)] == others


def test_command_reads_the_sections_of_params_yaml(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  seed: 0\nmodel:\n  width: 1.0\n")
    command = compare.command(["--md", "-A"], params)
    assert command[:4] == ["dvc", "exp", "show", "--only-changed"]
    assert command[command.index("--drop") + 1] == compare.drop_pattern(["train", "model"])
    assert command[command.index("--keep") + 1] == compare.keep_pattern()
    assert command[-2:] == ["--md", "-A"]


def test_command_without_params_yaml_says_where_to_run(tmp_path):
    with pytest.raises(SystemExit, match=r"params\.yaml: no parameter sections"):
        compare.command([], tmp_path / "params.yaml")
