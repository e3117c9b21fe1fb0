"""Official PyramidShare weights (fastai final.w) load into the PSR network under its own names."""

from __future__ import annotations

import re

import pytest
import torch

from psr.models import create_model
from psr.models.official import convert_official_state_dict, read_official_weights

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 2}


def official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's state dict under the official module names (psr/pyramid_sr.py)."""
    rules = (
        (r"stn\.localisation\.(.+)", "stn.localization.{}"),
        (r"stn\.regressor\.1\.(.+)", "stn.fc_loc.0.{}"),
        (r"stn\.regressor\.3\.(.+)", "stn.fc_loc.2.{}"),
        (r"low\.0\.(.+)", "pyramid_group.0.{}"),
        (r"sr\.(.+)", "pyramid_group.1.0.{}"),
        (r"low\.1\.(.+)", "pyramid_group.1.1.{}"),
        (r"low\.2\.(.+)", "pyramid_group.2.{}"),
        (r"head\.(.+)", "classifier.1.0.{}"),
    )
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"high\.0\.(\d+)\.(.+)", key):
            out[f"classifier.0.{int(m[1]) - 24}.{m[2]}"] = value  # re-indexed from sep_pos
            continue
        for pattern, target in rules:
            if m := re.fullmatch(pattern, key):
                out[target.format(m[1])] = value
                break
    assert len(out) == len(state)
    return out


def test_official_state_dict_loads_strictly_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    source = create_model("psr", num_classes=7, image_size=64, **SMALL).eval()
    official = official_names(source.state_dict())
    # anchors from the official code's module names
    assert {"stn.fc_loc.2.bias", "classifier.0.0.weight", "classifier.1.0.8.weight"} <= set(
        official
    )
    assert (
        "pyramid_group.1.0.tail.0.0.weight" in official and "pyramid_group.1.1.0.weight" in official
    )
    path = tmp_path / "final.w"
    torch.save({"model": official, "opt": {}}, path)  # fastai Learner.save(with_opt=True)
    target = create_model("psr", num_classes=7, image_size=64, **SMALL).eval()
    target.load_state_dict(read_official_weights(path), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"no rule for \['features\.0\.weight'\]"):
        convert_official_state_dict({"features.0.weight": torch.zeros(1)})
