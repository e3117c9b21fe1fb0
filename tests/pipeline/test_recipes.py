"""Every recipe in configs/ runs the whole pipeline, stage by stage, on tiny synthetic data in
its dataset's format: the recipe's settings as written (vote mode, prior, selection, TTA, class
order, validation draw), only the sizes shrunk and ImageNet weights (a download) left out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))
TINY = [
    "download.synthetic=true",
    "prepare.source=data/raw",
    "prepare.workers=0",
    "download.synth.train=64",
    "download.synth.valid=16",
    "download.synth.test=16",
    "sr_pretrain.steps=2",
    "sr_pretrain.batch_size=8",
    "sr_pretrain.max_images=32",
    "sr_pretrain.valid_images=8",
    "model.pretrained=none",
    "model.width=0.0625",
    "model.sr_features=4",
    "model.sr_res_blocks=1",
    "train.batch_size=16",
    "train.phase1.epochs=1",
    "train.phase2.epochs=1",
    "train.workers=0",
    "train.device=cpu",
    "evaluate.tta_repeats=1",
    "evaluate.workers=0",
    "evaluate.batch_size=32",
    "evaluate.device=cpu",
]
#: What a recipe needs besides the sizes: a balanced draw the tiny classes can give; RAF-DB's
#: backbone stage, one tiny step on a synthetic FER+ (written by the test).
EXTRA = {
    "affectnet7": ["prepare.valid_per_class=1"],
    "affectnet8": ["prepare.valid_per_class=1"],
    "rafdb": [
        "backbone.votes=data/external/fer2013/fer2013new.csv",
        'backbone.steps=[{"image_size": 48, "phase1": {"epochs": 1}}]',
        "backbone.train.batch_size=16",
        "backbone.train.workers=0",
        "backbone.train.device=cpu",
        "backbone.train.progress=false",
    ],
}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_sets_every_model_knob_the_embedded_default_changes(recipe: Path):
    """A recipe is written over params.yaml: the embedded default's departures from the paper's
    network (narrow width, tiny EDSR, no head dropout) must not leak into a paper recipe."""
    from pipeline.params import read_yaml
    from psr.models import ModelConfig

    embedded = read_yaml((REPO / "params.yaml").read_text())["model"]
    written = read_yaml(recipe.read_text()).get("model", {})
    fields = ModelConfig.model_fields
    departures = {key for key, value in embedded.items() if value != fields[key].default}
    assert "head_dropout" in departures and "width" in departures
    assert departures - set(written) == set(), f"{recipe.name} inherits them from params.yaml"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_tiny_synthetic_data(recipe: Path, tmp_path, monkeypatch):
    import yaml

    from pipeline import flows
    from pipeline.params import load_params, set_params
    from pipeline.recipe import apply_recipe

    written = yaml.safe_load(recipe.read_text())
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_recipe(recipe, tmp_path / "params.yaml")
    set_params(tmp_path / "params.yaml", TINY + EXTRA.get(recipe.stem, []))
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "PSR_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if written.get("backbone", {}).get("enabled"):
        from psr.data.synthetic import SynthConfig, write_dataset

        fer = SynthConfig(train=48, valid=16, test=8)
        write_dataset("ferplus", tmp_path / written["backbone"]["source"], fer, progress=False)
    with contextlib.chdir(tmp_path):
        params = load_params()
        # the recipe's own choices survived the shrinking
        assert params.prepare.dataset == written["prepare"]["dataset"]
        assert params.priors.kind == written["priors"]["kind"]
        assert params.train.selection == written["train"]["selection"] == "official"
        assert params.model.image_size == written["model"]["image_size"]
        for name in flows.STAGES:
            module = __import__(f"pipeline.stages.{name}", fromlist=["run"])
            module.run(load_params())
        metrics = json.loads(Path("reports/evaluate/metrics.json").read_text())
        manifest = json.loads(Path(params.prepared_dir, "manifest.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["variant"] == "tta"
    assert len(manifest["class_names"]) == written["model"]["num_classes"]
    if params.prepare.dataset == "ferplus":  # both test-set definitions reported
        assert set(metrics["test_definitions"]) == {"majority", "argmax"}
    assert (tmp_path / "models" / "psr" / "best.pt").is_file()
    backbone = json.loads((tmp_path / "models" / "backbone" / "backbone.json").read_text())
    assert bool(backbone["checkpoint"]) == bool(written.get("backbone", {}).get("enabled"))
    if backbone["checkpoint"]:  # the PSR model started from it
        from psr.engine.checkpoint import load_state
        from psr.fileio import sha256

        identity = load_state(tmp_path / "models" / "psr" / "last.pt")["identity"]
        assert identity["pretrained weights"] == sha256(tmp_path / backbone["checkpoint"])
    registry = json.loads((tmp_path / "reports" / "registry.json").read_text())
    assert registry["name"] == written["register"]["model_name"]
