"""Forward/backward/shape checks over every member of the PSR family (in the manner of timm)."""

from __future__ import annotations

import pytest
import torch

from psr.models import FAMILY, create_model, fuse, list_models

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}
MEMBERS = sorted(FAMILY)
SINGLE_SCALE = {"vgg16", "small_cnn"}
#: The members built on PSRNet (STN, SR, per-branch low part, the fastai head).
PSRNETS = sorted(set(FAMILY) - {"small_cnn"})


def _valid(name: str, size: int) -> bool:
    return size >= 64 or name in SINGLE_SCALE


CASES = [  # (num_classes, batch, train); training needs batch >= 2 (BatchNorm1d in the head)
    (8, 16, False),
    (7, 1, False),
    (7, 4, True),
    pytest.param(8, 16, True, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", MEMBERS)
@pytest.mark.parametrize("size", [48, 96, 100])
@pytest.mark.parametrize(("num_classes", "batch", "train"), CASES)
def test_forward_shapes(name: str, size: int, num_classes: int, batch: int, train: bool) -> None:
    if not _valid(name, size):
        with pytest.raises(ValueError, match=r"image_size=48 .* reduce to 0 px"):
            create_model(name, num_classes=num_classes, image_size=size, **SMALL)
        return
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, image_size=size, **SMALL).train(train)
    x = torch.randn(batch, 3, size, size)
    with torch.set_grad_enabled(train):
        logits = model(x)
    n_branches = len(model.branches)
    assert logits.shape == (batch, n_branches, num_classes)
    assert torch.isfinite(logits).all()
    probs = fuse(logits)
    assert probs.shape == (batch, num_classes)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(batch))
    if train:
        logits.logsumexp(dim=-1).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", PSRNETS)
def test_batch_of_one_in_training_is_refused_by_batchnorm(name: str) -> None:
    """The fastai head's BatchNorm1d cannot train on one sample: train with batches >= 2."""
    model = create_model(name, num_classes=7, image_size=64, **SMALL).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name", MEMBERS)
def test_param_groups_cover_every_parameter_once(name: str) -> None:
    model = create_model(name, num_classes=7, image_size=64, **SMALL)
    groups = model.param_groups()
    assert len(groups) == 3
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    if name == "small_cnn":  # no STN or SR; the last linear layer trains at the "high" rate
        assert groups[0] == []
        assert id(model.head[-1].weight) in {id(p) for p in groups[1]}
        assert id(model.features[0].weight) in {id(p) for p in groups[2]}
        return
    stn_sr = {id(p) for p in (*model.stn.parameters(), *model.sr.parameters())}
    assert {id(p) for p in groups[0]} == stn_sr
    assert {id(p) for p in groups[2]} == {id(p) for p in model.low.parameters()}


def test_family_members_differ_as_documented() -> None:
    assert set(list_models()) == set(FAMILY)
    psr = create_model("psr", image_size=64, **SMALL)
    assert [b.name for b in psr.branches] == ["low", "sr_x2", "full"]
    assert type(psr.sr).__name__ == "EDSR"
    assert not isinstance(create_model("psr_nostn", image_size=64, **SMALL).stn, type(psr.stn))
    assert type(create_model("psr_interp", image_size=64, **SMALL).sr).__name__ == "Interpolation"
    assert type(create_model("psr_espcn", image_size=64, **SMALL).sr).__name__ == "ESPCN"
    baseline = create_model("vgg16", image_size=48, **SMALL)
    assert [b.name for b in baseline.branches] == ["full"]
    assert sum(p.numel() for p in baseline.sr.parameters()) == 0
    small = create_model("small_cnn", image_size=64, **SMALL)
    convs = [m for m in small.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]  # width 0.125
    assert sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in baseline.parameters()
    )


def test_small_cnn_takes_none_of_psrs_parts() -> None:
    for change in (
        {"multiples": [1, 2, 1]},
        {"stn": True},
        {"pretrained": "imagenet"},
        {"head_dropout": [0.25, 0.5]},
    ):
        with pytest.raises(ValueError, match="small_cnn is a plain single-scale CNN"):
            create_model("small_cnn", image_size=64, **(SMALL | change))


@pytest.mark.parametrize("name", ["psr", "vgg16"])
def test_head_dropout_defaults_to_the_papers_and_is_configurable(name: str) -> None:
    def dropouts(**cfg: object) -> list[float]:
        model = create_model(name, image_size=64, **SMALL, **cfg)
        return [m.p for m in model.head if isinstance(m, torch.nn.Dropout)]

    assert dropouts() == [0.25, 0.5]  # fastai v1's head, as the official PyramidShare
    assert dropouts(head_dropout=[0.0, 0.0]) == [0.0, 0.0]
    assert create_model("small_cnn", image_size=64, **SMALL).config.head_dropout == (0.0, 0.0)


def test_deeper_pyramid_has_two_sr_networks() -> None:
    model = create_model("psr", multiples=[1, 2, 4, 1], image_size=128, num_classes=7, **SMALL)
    assert [(b.name, b.size) for b in model.branches] == [
        ("low", 32),
        ("sr_x2", 64),
        ("sr_x4", 128),
        ("full", 128),
    ]
    assert set(model.sr.keys()) == {"x2", "x4"}
    assert "tail.0.2.weight" in model.sr["x4"].state_dict()
    assert model.eval()(torch.randn(2, 3, 128, 128)).shape == (2, 4, 7)
    with pytest.raises(ValueError, match=r"gives a 24 px low branch.*image_size >= 128"):
        create_model("psr", multiples=[1, 2, 4, 1], image_size=96, **SMALL)
