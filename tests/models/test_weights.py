"""Backbone weights from a torchvision state dict or a PSR checkpoint, with class reordering."""

from __future__ import annotations

import pytest
import torch

from psr.data.labels import class_names, permutation
from psr.models import create_model, save_model
from psr.models.vgg import vgg16_bn_features

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def test_torchvision_state_dict_initialises_every_low_copy_and_the_high_part(tmp_path) -> None:
    torch.manual_seed(1)
    features = vgg16_bn_features(0.125)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's classifier is ignored
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    model = create_model("psr", image_size=64, pretrained=str(path), sep_pos=14, **SMALL)
    for low in model.low:
        torch.testing.assert_close(low[0].weight, features[0].weight)
    torch.testing.assert_close(
        model.high[0][0].weight, features[14].weight
    )  # keys keep VGG indices


def test_ferplus_checkpoint_starts_a_rafdb_model_with_reordered_outputs(tmp_path) -> None:
    torch.manual_seed(2)
    ferplus = class_names("ferplus")
    rafdb = class_names("rafdb")
    source = create_model("vgg16", num_classes=8, image_size=64, sep_pos=24, **SMALL)
    path = save_model(
        tmp_path / "ferplus.pt",
        source,
        config=source.config.model_dump(),
        class_names=ferplus,
        image_size=64,
    )
    target = create_model(
        "psr",
        num_classes=7,
        image_size=64,
        sep_pos=10,
        pretrained=str(path),
        class_names=list(rafdb),
        **SMALL,
    )
    order = permutation(ferplus, rafdb)
    torch.testing.assert_close(target.head[8].weight, source.head[8].weight[order])
    torch.testing.assert_close(target.head[8].bias, source.head[8].bias[order])
    torch.testing.assert_close(target.head[4].weight, source.head[4].weight)
    src_features = [*source.low[0], *source.high[0]]
    for low in target.low:
        torch.testing.assert_close(low[7].weight, src_features[7].weight)
    torch.testing.assert_close(target.high[0][0].weight, src_features[10].weight)


def test_backbone_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="backbone weights file not found"):
        create_model("psr", image_size=64, pretrained=str(tmp_path / "missing.pt"), **SMALL)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a readable torch file"):
        create_model("psr", image_size=64, pretrained=str(junk), **SMALL)
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match="neither a torchvision vgg16_bn state dict"):
        create_model("psr", image_size=64, pretrained=str(other), **SMALL)
    wide = tmp_path / "wide.pt"
    torch.save({f"features.{k}": v for k, v in vgg16_bn_features(0.25).state_dict().items()}, wide)
    with pytest.raises(ValueError, match="do not fit this model's VGG"):
        create_model("psr", image_size=64, pretrained=str(wide), **SMALL)


def test_class_count_mismatch_without_names_is_an_error(tmp_path) -> None:
    source = create_model("vgg16", num_classes=8, image_size=64, **SMALL)
    path = tmp_path / "src.pt"
    torch.save({"config": source.config.model_dump(), "state_dict": source.state_dict()}, path)
    with pytest.raises(ValueError, match="output layer has 8 classes, the model 7"):
        create_model("vgg16", num_classes=7, image_size=64, pretrained=str(path), **SMALL)


def test_a_pyramid_checkpoint_starts_each_branch_from_its_own_low_part(tmp_path) -> None:
    torch.manual_seed(3)
    source = create_model("psr", num_classes=8, image_size=64, **SMALL)
    with torch.no_grad():  # make the three low copies differ, as after training
        for b, low in enumerate(source.low):
            low[0].weight.add_(float(b + 1))
    names = class_names("ferplus")
    path = save_model(
        tmp_path / "psr.pt", source, config=source.config.model_dump(), class_names=names,
        image_size=64,
    )  # fmt: skip
    target = create_model("psr", num_classes=8, image_size=64, pretrained=str(path), **SMALL)
    for b in range(3):
        torch.testing.assert_close(target.low[b][0].weight, source.low[b][0].weight)
    deeper = dict(SMALL, multiples=[1, 2, 4, 1])
    with pytest.raises(ValueError, match="is a 3-branch model; this model has 4 branches"):
        create_model("psr", num_classes=8, image_size=128, pretrained=str(path), **deeper)
