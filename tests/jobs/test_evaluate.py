import json

import pandas as pd
import pytest

from psr.jobs import evaluate, train


@pytest.fixture(scope="module")
def checkpoint(prepared, prior_file, tmp_path_factory):
    from psr.engine import TrainConfig
    from psr.models import ModelConfig

    model = ModelConfig(name="psr", image_size=64, width=0.0625, sr_features=4, sr_res_blocks=1)
    cfg = TrainConfig(batch_size=16, workers=0, device="cpu", progress=False)
    cfg = cfg.model_copy(
        update={
            "phase1": cfg.phase1.model_copy(update={"epochs": 1}),
            "phase2": cfg.phase2.model_copy(update={"epochs": 0}),
        }
    )
    out = tmp_path_factory.mktemp("ckpt")
    return train.run(model, cfg, prepared, out, prior=prior_file).fit.best_checkpoint


def test_evaluate_job_with_both_variants_and_a_breakdown(prepared, checkpoint, tmp_path):
    ids = pd.read_csv(prepared / "test.csv")["id"]
    sidecar = tmp_path / "side.csv"
    pd.DataFrame({"id": ids, "face_size": range(len(ids))}).to_csv(sidecar, index=False)
    cfg = evaluate.EvaluateConfig(
        tta_repeats=1, compare_plain=True, batch_size=8, device="cpu", breakdown_by="face_size"
    )
    assert cfg.tta_mode == "both"
    result = evaluate.run(cfg, checkpoint, prepared, tmp_path / "out", sidecar=sidecar)
    assert list(result.results) == ["tta", "no_tta"]
    assert result.headline[0] == "tta"
    logged = result.logged_metrics()
    assert {"accuracy", "no_tta_accuracy", "macro_f1", "ece"} <= set(logged)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(logged["accuracy"])
    baseline = metrics["majority_baseline"]  # the train split's most frequent class, on test
    assert baseline["class"] in json.loads((prepared / "manifest.json").read_text())["class_names"]
    assert 0 < baseline["accuracy"] < 1
    assert metrics["chance_baseline"]["accuracy"] == pytest.approx(1 / 8)
    assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert metrics["no_tta"]["accuracy_ci_low"] <= metrics["no_tta"]["accuracy"]
    assert {"accuracy_ci_low", "accuracy_ci_high", "no_tta_uar_ci_high"} <= set(logged)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>TTA vs plain</h2>" in page and "<h2>Baselines</h2>" in page
    assert f"always &#x27;{baseline['class']}&#x27;" in page
    assert result.breakdown is not None and len(result.breakdown) > 0
    assert (tmp_path / "out" / "report.html").is_file()


def test_breakdown_needs_its_sidecar(prepared, checkpoint, tmp_path):
    cfg = evaluate.EvaluateConfig(breakdown_by="face_size", device="cpu")
    with pytest.raises(ValueError, match="sidecar"):
        evaluate.run(cfg, checkpoint, prepared, tmp_path)


def test_tta_modes():
    assert evaluate.EvaluateConfig(tta=False, compare_plain=True).tta_mode == "off"
    assert evaluate.EvaluateConfig(compare_plain=False).tta_mode == "on"
    assert evaluate.EvaluateConfig().tta_mode == "both"  # the plain pass beside TTA: free


def test_face_size_breakdown_by_default_when_the_sidecar_has_it(prepared, checkpoint, tmp_path):
    """``breakdown_by: auto`` (the default): the generator's generation.csv gives the accuracy
    by face size; a sidecar without that column, or none (real data), gives no breakdown."""
    generation = prepared.parent.parent / "raw" / "generation.csv"  # the conftest's generator
    cfg = evaluate.EvaluateConfig(tta=False, batch_size=8, device="cpu")
    assert cfg.breakdown_by == "auto"
    provenance = {"registered model": "psr-fer version 3", "git commit": "abc123"}
    result = evaluate.run(
        cfg, checkpoint, prepared, tmp_path / "auto", sidecar=generation, provenance=provenance
    )
    assert result.breakdown_column == "face_size"
    table = pd.read_csv(tmp_path / "auto" / "accuracy_by_face_size.csv")
    assert table["count"].sum() == result.headline[1].metrics["num_samples"]
    page = (tmp_path / "auto" / "report.html").read_text()
    assert "<h2>Accuracy by face_size</h2>" in page
    assert "<td>registered model</td><td>psr-fer version 3</td>" in page  # as the caller gave it
    assert "best.pt (epoch 1, phase 1, valid accuracy 0." in page  # one epoch, numbered from 1
    other = tmp_path / "other.csv"
    pd.read_csv(generation).drop(columns="face_size").to_csv(other, index=False)
    result = evaluate.run(cfg, checkpoint, prepared, tmp_path / "none", sidecar=other)
    assert result.breakdown is None and result.breakdown_column is None
    assert not list((tmp_path / "none").glob("accuracy_by_*"))
    assert evaluate.breakdown_column(cfg, None) is None  # no sidecar: nothing is read
    named = cfg.model_copy(update={"breakdown_by": "intensity"})
    assert evaluate.breakdown_column(named, None) == "intensity"  # then an error: no sidecar


@pytest.mark.parametrize("definition", ["majority", "argmax"])
def test_ferplus_test_is_scored_on_the_chosen_definition_with_the_other_beside(
    prepared, checkpoint, tmp_path, definition
):
    from psr.data.ferplus import split_definitions

    masks = split_definitions(prepared, "test")
    sizes = {name: int(mask.sum()) for name, mask in masks.items()}
    assert sizes["argmax"] == len(pd.read_csv(prepared / "test.csv"))  # the split holds both
    assert 0 < sizes["majority"] < sizes["argmax"]  # the crowd leaves some without a majority
    cfg = evaluate.EvaluateConfig(tta=False, batch_size=8, device="cpu", test_definition=definition)
    result = evaluate.run(cfg, checkpoint, prepared, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_samples"] == sizes[definition]
    table = metrics["test_definitions"]
    assert {k: v["num_samples"] for k, v in table.items()} == sizes
    assert table[definition]["headline"] == "yes"
    assert table[definition]["accuracy"] == pytest.approx(result.headline[1].metrics["accuracy"])
    other = "argmax" if definition == "majority" else "majority"
    assert table[other]["headline"] == "no"
    assert "FER+ test-set definitions" in (tmp_path / "out" / "report.html").read_text()
