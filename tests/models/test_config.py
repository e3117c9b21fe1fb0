"""ModelConfig: paper defaults, member defaults, round trips and clear errors."""

from __future__ import annotations

import pytest

from psr.models import FAMILY, ModelConfig, create_model

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def test_defaults_are_the_papers() -> None:
    cfg = ModelConfig()
    assert (cfg.name, cfg.num_classes, cfg.image_size) == ("psr", 8, 96)
    assert (cfg.multiples, cfg.stn, cfg.sr) == ([1, 2, 1], True, "edsr")
    assert (cfg.sr_features, cfg.sr_res_blocks, cfg.sr_res_scale) == (64, 16, 1.0)
    assert (cfg.sep_pos, cfg.width) == (24, 1.0)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_member_defaults_fill_unset_fields_only(name: str) -> None:
    cfg = ModelConfig(name=name)
    for key, value in FAMILY[name].defaults.items():
        assert getattr(cfg, key) == value
    if name != "small_cnn":  # which takes no STN (test_family)
        assert ModelConfig(name=name, stn=True).stn is True


def test_both_call_styles_build_the_same_model() -> None:
    cfg = ModelConfig(name="psr_nostn", num_classes=7, image_size=100, **SMALL)
    a = create_model(**cfg.model_dump())
    rest = cfg.model_dump(exclude={"name", "num_classes", "image_size"})
    b = create_model(cfg.name, num_classes=cfg.num_classes, image_size=cfg.image_size, **rest)
    assert a.config == b.config == cfg
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "resnet"}, r"unknown model 'resnet'; valid: \['psr', 'psr_espcn'"),
        ({"depth": 3}, r"depth\n  Extra inputs are not permitted"),
        ({"sep_pos": 25}, "sep_pos=25 is not a vgg16_bn split point"),
        ({"multiples": [1, 2]}, r"multiples=\[1, 2\] is not a pyramid"),
        ({"multiples": [1, 4, 2, 1]}, "is not a pyramid"),
        ({"multiples": [1, 2, 1], "image_size": 48}, "image_size >= 64"),
        ({"sr": "srgan"}, r"sr\n  Input should be 'edsr'"),
        ({"width": 0}, r"width\n  Input should be greater than 0"),
        ({"num_classes": 1}, r"num_classes\n  Input should be greater than or equal to 2"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but num_classes=8"),
        (
            {"name": "vgg16", "image_size": 31},
            r"gives a 31 px full branch.*>= 32 for these multiples\. \[",
        ),
    ],
)
def test_bad_configs_name_the_field(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(**cfg)


def test_single_scale_accepts_small_inputs() -> None:
    model = create_model("psr", multiples=[1], image_size=48, **SMALL)
    assert [b.name for b in model.branches] == ["full"]
