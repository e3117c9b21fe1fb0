"""``python -m pipeline.folds``: every fold as a DVC experiment, the test metrics across folds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dvc_repo import BIN, REPO, clean_env, copy_repository, run

from pipeline.folds import check_folds, markdown, summarise

#: A tiny RAF-DB-format pipeline: synthetic faces, two folds, one short training.
TINY_RAFDB = [
    "prepare.dataset=rafdb",
    "prepare.name=tinyraf",
    "prepare.image_size=64",
    "prepare.n_folds=2",
    "prepare.num_classes=7",
    "model.num_classes=7",
    "priors.kind=official",
    "download.synth.train=96",
    "download.synth.valid=0",
    "download.synth.test=32",
    "sr_pretrain.steps=2",
    "sr_pretrain.batch_size=16",
    "sr_pretrain.max_images=32",
    "sr_pretrain.valid_images=8",
    "model.image_size=64",
    "model.width=0.0625",
    "model.sr_features=4",
    "model.sr_res_blocks=1",
    "train.batch_size=32",
    "train.phase1.epochs=1",
    "train.phase2.epochs=0",
    "evaluate.tta_repeats=1",
    "register.sample_size=2",
    "register.baseline_margin=null",
]


def test_summary_statistics_and_table():
    rows = [
        {"fold": 0, "experiment": "x-fold0", "accuracy": 0.5, "macro_f1": 0.4, "uar": 0.3},
        {"fold": 1, "experiment": "x-fold1", "accuracy": 0.7, "macro_f1": 0.6, "uar": 0.5},
        {"fold": 2, "experiment": "x-fold2", "accuracy": 0.9, "macro_f1": 0.5, "uar": 0.4},
    ]
    summary = summarise(rows)
    assert summary["accuracy"] == pytest.approx(
        {"mean": 0.7, "std": 0.163299, "min": 0.5, "max": 0.9, "median": 0.7}, abs=1e-6
    )
    assert summary["uar"]["median"] == 0.4 and summary["folds"] == [0, 1, 2]
    table = markdown(summary)
    assert "| 1 | x-fold1 | 0.7000 | 0.6000 | 0.5000 |" in table
    assert "| mean | | 0.7000 | 0.5000 | 0.4000 |" in table


def test_only_a_fold_protocol_has_folds(tmp_path):
    from pipeline.params import load_params, set_params

    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ValueError, match="FER\\+ has an official validation split"):
        check_folds(load_params(params_file), [0])
    set_params(params_file, ["prepare.dataset=rafdb"])
    check_folds(load_params(params_file), [0, 4])
    with pytest.raises(ValueError, match=r"each must be in 0\.\.4"):
        check_folds(load_params(params_file), [5])
    set_params(params_file, ["prepare.valid_fraction=0.1"])
    with pytest.raises(ValueError, match="replace the folds"):
        check_folds(load_params(params_file), [0])


@pytest.mark.slow
@pytest.mark.integration
def test_a_fold_is_an_experiment_and_a_rerun_skips_it(tmp_path):
    """One fold (each is a whole pipeline run; the statistics over folds are tested above)."""
    root = copy_repository(tmp_path / "repo", TINY_RAFDB)
    before = (root / "params.yaml").read_text()
    command = [sys.executable, "-m", "pipeline.folds", "--name", "raf", "--folds", "1"]
    result = run(command, root, timeout=900)
    summary = json.loads((root / "reports/folds/summary.json").read_text())
    assert summary["folds"] == [1]
    [row] = summary["per_fold"]
    assert row["experiment"] == "raf-fold1" and 0.0 <= row["accuracy"] <= 1.0
    assert row["num_samples"] > 0
    assert "test accuracy over folds [1]" in result.stdout
    assert (root / "params.yaml").read_text() == before  # prepare.fold is the user's again
    shown = subprocess.run(
        [str(BIN / "dvc"), "exp", "show", "--json"], cwd=root, env=clean_env(),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "raf-fold1" in shown
    again = run(command, root, timeout=300)
    assert again.stdout.count("done before") == 1
