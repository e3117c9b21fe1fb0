"""Inference checkpoints: atomic save, safe load, faithful round trip, clear errors."""

from __future__ import annotations

import pytest
import torch

from psr.data.labels import class_names
from psr.models import create_model, load_model, save_model

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def _trained_a_little(name: str = "psr"):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=64, **SMALL).train()
    model(torch.randn(4, 3, 64, 64))  # moves BatchNorm running statistics off their defaults
    if name not in ("vgg16", "small_cnn"):  # a working STN, so its weights must round-trip
        with torch.no_grad():
            model.stn.regressor[-1].weight.normal_(0, 0.01)
    return model.eval()


@pytest.mark.parametrize("name", ["psr", "psr_interp", "vgg16", "small_cnn"])
def test_round_trip_rebuilds_the_same_model(tmp_path, name: str) -> None:
    model = _trained_a_little(name)
    names = class_names("rafdb")
    path = save_model(
        tmp_path / "sub" / "best.pt",
        model,
        config=model.config.model_dump(),
        class_names=names,
        image_size=64,
        extra={"epoch": 3, "metrics": {"accuracy": 0.5}},
    )
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw["class_names"] == list(names)
    loaded, info = load_model(path)
    assert not loaded.training
    assert info["class_names"] == list(names)
    assert info["image_size"] == 64
    assert info["extra"] == {"epoch": 3, "metrics": {"accuracy": 0.5}}
    assert info["config"] == model.config.model_dump()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_load_does_not_need_the_original_weight_files(tmp_path) -> None:
    sr = tmp_path / "sr.pt"
    torch.save(create_model("psr", image_size=64, **SMALL).sr.state_dict(), sr)
    model = create_model("psr", image_size=64, sr_weights=str(sr), **SMALL)
    path = save_model(
        tmp_path / "m.pt",
        model,
        config=model.config.model_dump(),
        class_names="abcdefgh",
        image_size=64,
    )
    sr.unlink()
    loaded, info = load_model(path)
    assert info["config"]["sr_weights"] == str(sr)
    torch.testing.assert_close(loaded.sr.head[0].weight, model.sr.head[0].weight)


def test_checkpoint_errors(tmp_path) -> None:
    model = create_model("vgg16", num_classes=7, image_size=64, **SMALL)
    config = model.config.model_dump()
    with pytest.raises(FileNotFoundError, match="model checkpoint file not found"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"corrupt\.pt is not a readable torch file"):
        load_model(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a PSR model checkpoint"):
        load_model(other)
    with pytest.raises(ValueError, match="3 class names for a 7-class model"):
        save_model(tmp_path / "x.pt", model, config=config, class_names="abc", image_size=64)
    with pytest.raises(TypeError, match=r"checkpoint.extra.when holds a"):
        save_model(
            tmp_path / "x.pt",
            model,
            config=config,
            class_names="abcdefg",
            image_size=64,
            extra={"when": object()},
        )
    assert not (tmp_path / "x.pt").exists()
