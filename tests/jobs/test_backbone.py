"""The backbone job: one vgg16 trained through its steps, each from the one before's selection."""

from __future__ import annotations

import pytest
import torch

from psr.engine import PhaseConfig
from psr.jobs import backbone
from psr.models import ModelConfig, create_model


def _cfg(tiny_train, steps):
    return backbone.BackboneConfig(
        enabled=True, steps=steps, train=tiny_train(loss={"name": "soft_ce"})
    )


def test_each_step_starts_from_the_step_before(prepared, tiny_train, tmp_path):
    steps = [
        backbone.BackboneStep(image_size=48, phase1=PhaseConfig(epochs=2, lrs=(5e-3,))),
        # lr ~0: the second step's selection shows the weights it started from
        backbone.BackboneStep(image_size=64, phase1=PhaseConfig(epochs=1, lrs=(1e-12,))),
    ]
    model = ModelConfig(name="vgg16", width=0.0625, image_size=48)
    result = backbone.run(_cfg(tiny_train, steps), model, prepared, tmp_path)
    assert [s["image_size"] for s in result.steps] == [48, 64]
    first = torch.load(tmp_path / "step1-48px" / "best.pt", weights_only=True)
    final = torch.load(result.checkpoint, weights_only=True)
    assert (first["image_size"], final["image_size"]) == (48, 64)
    for key, value in first["state_dict"].items():
        if key.endswith(("weight", "bias")) and "running" not in key:
            torch.testing.assert_close(final["state_dict"][key], value, atol=1e-6, rtol=0)
    # what the RAF-DB recipe does with it: every branch, the high part and the head start there
    psr = create_model("psr", num_classes=8, image_size=64, width=0.0625, sr_features=4,
                       sr_res_blocks=1, pretrained=str(result.checkpoint))  # fmt: skip
    for low in psr.low:
        torch.testing.assert_close(low[0].weight, final["state_dict"]["low.0.0.weight"])
    torch.testing.assert_close(psr.head[8].weight, final["state_dict"]["head.8.weight"])


def test_the_official_steps_and_errors(tiny_train):
    steps = backbone.BackboneConfig().steps
    assert [s.image_size for s in steps] == [48, 96, 144, 48]
    assert [(s.phase1.epochs, s.phase2.epochs) for s in steps] == [
        (20, 20),
        (20, 0),
        (20, 0),
        (20, 0),
    ]
    assert steps[0].phase2.optimizer == "adamw" and steps[1].phase1.lrs == (1e-3,)
    assert backbone.BackboneConfig().train.batch_size == 128
    with pytest.raises(ValueError, match="the vgg16 member"):
        backbone.run(backbone.BackboneConfig(), ModelConfig(name="psr"), "x", "y")
