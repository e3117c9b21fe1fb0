"""The screenshot tool's checks and page addresses (the photographs need a real run)."""

from __future__ import annotations

import json

import pytest

from pipeline import screenshots


def test_without_a_finished_run_it_says_to_run_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="run `make run` first"):
        screenshots.main([])


def test_mlflow_pages_come_from_the_run_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/train").mkdir(parents=True)
    record = {"experiment_id": "3", "run_id": "abc"}
    (tmp_path / "reports/train/mlflow_run.json").write_text(json.dumps(record))
    (tmp_path / "reports/registry.json").write_text(json.dumps({"name": "psr-fer"}))
    pages = screenshots.mlflow_pages("http://h")
    assert pages == {
        "mlflow-runs": "http://h/#/experiments/3/runs",
        "mlflow-train-run": "http://h/#/experiments/3/runs/abc/model-metrics",
        "mlflow-registered-model": "http://h/#/models/psr-fer",
    }
