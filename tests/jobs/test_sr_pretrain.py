import json

import pandas as pd
import pytest
import torch

from psr.jobs import sr_pretrain


@pytest.fixture
def cfg():
    return sr_pretrain.SRPretrainConfig(
        steps=6, valid_every=4, batch_size=8, max_images=48, valid_images=16, device="cpu"
    )


def test_pretraining_writes_weights_history_and_metrics(prepared, tmp_path, cfg, tiny_model):
    seen = []
    result = sr_pretrain.run(
        cfg,
        tiny_model(),
        prepared,
        tmp_path / "sr",
        reports=tmp_path / "reports",
        callbacks=[lambda step, m: seen.append(step)],
    )
    assert seen == [4, 6]  # every valid_every steps, and the last
    assert result.weights == tmp_path / "sr" / "sr_x2.pt"
    info = json.loads((tmp_path / "sr" / "sr.json").read_text())
    assert info == {"weights": str(result.weights), "kind": "edsr", "scale": 2}
    history = pd.read_csv(tmp_path / "reports" / "history.csv")
    assert history["step"].tolist() == [4, 6]
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics == pytest.approx(result.metrics)
    assert set(metrics) >= {"psnr_sr", "psnr_bicubic", "psnr_gain", "ssim_sr", "ssim_bicubic"}
    # the state dict loads into the model's SR branch
    from psr.models import build_model

    build_model(tiny_model(sr_weights=str(result.weights)))


def test_same_seed_same_weights_other_seed_other_weights(prepared, tmp_path, cfg, tiny_model):
    """Seeds decide everything: the network is built after seeding (it was not, once)."""
    torch.manual_seed(123)  # whatever ran before in the process must not matter
    a = sr_pretrain.run(cfg, tiny_model(), prepared, tmp_path / "a")
    torch.rand(7)
    b = sr_pretrain.run(cfg, tiny_model(), prepared, tmp_path / "b")
    c = sr_pretrain.run(cfg.model_copy(update={"seed": 1}), tiny_model(), prepared, tmp_path / "c")
    wa, wb, wc = (torch.load(r.weights, weights_only=True) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.history == b.history


@pytest.mark.parametrize(
    ("cfg_changes", "model_changes", "reason"),
    [
        ({"enabled": False}, {}, "disabled"),
        ({}, {"name": "psr_interp"}, "has no x2 net"),
        ({}, {"name": "vgg16"}, "has no x2 net"),
    ],
)
def test_nothing_to_learn_is_recorded(
    prepared, tmp_path, cfg, tiny_model, cfg_changes, model_changes, reason
):
    result = sr_pretrain.run(
        cfg.model_copy(update=cfg_changes), tiny_model(**model_changes), prepared, tmp_path
    )
    assert result.weights is None and reason in result.reason
    assert json.loads((tmp_path / "sr.json").read_text())["weights"] is None
    assert json.loads((tmp_path / "metrics.json").read_text()) == {}


def test_default_recipe_beats_bicubic(prepared, tmp_path, tiny_model):
    """The documented recipe (steps, patches, rate) turns EDSR into a better upsampler than
    bicubic, in PSNR and SSIM, even on 64 training faces and an 8-feature network."""
    cfg = sr_pretrain.SRPretrainConfig(steps=1000, valid_every=1000, device="cpu")
    result = sr_pretrain.run(cfg, tiny_model(sr_features=8), prepared, tmp_path)
    m = result.metrics
    assert m["psnr_sr"] > m["psnr_bicubic"] and m["ssim_sr"] > m["ssim_bicubic"], m


def test_ssim_of_identical_images_is_one_and_falls_with_noise():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32) * 0.5
    assert sr_pretrain.ssim(x, x) == pytest.approx(torch.ones(2))
    noisy = sr_pretrain.ssim(x + 0.1 * torch.randn_like(x), x)
    noisier = sr_pretrain.ssim(x + 0.4 * torch.randn_like(x), x)
    assert (noisier < noisy).all() and (noisy < 1).all()


def test_ssim_matches_the_closed_form_on_constant_images():
    """On flat images SSIM is its luminance term: (2ab + c1) / (a^2 + b^2 + c1)."""
    from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    def flat(value):  # a normalised tensor whose pixels are all ``value``
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((torch.full((1, 3, 16, 16), value) - mean) / std).double()

    a, b, c1 = 0.3, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert sr_pretrain.ssim(flat(a), flat(b)).item() == pytest.approx(expected, rel=1e-6)


def test_patches_are_even_aligned_crops_of_the_faces():
    faces = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        patches = sr_pretrain.augment(faces, 4, g)
        assert patches.shape == (2, 3, 4, 4)
        for face, patch in zip(faces, patches, strict=True):
            hits = [
                (i, j)
                for i in range(0, 5)
                for j in range(0, 5)
                if torch.equal(face[:, i : i + 4, j : j + 4], patch)
                or torch.equal(face.flip(-1)[:, i : i + 4, j : j + 4], patch)
            ]
            assert hits and all(i % 2 == 0 and j % 2 == 0 for i, j in hits)


@pytest.mark.parametrize(
    ("changes", "message"), [({"patch_size": 31}, "multiple of 2"), ({"steps": 0}, "steps")]
)
def test_bad_recipe_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        sr_pretrain.SRPretrainConfig(**changes)


def test_patch_larger_than_the_face_is_a_clear_error(prepared, tmp_path, cfg, tiny_model):
    with pytest.raises(ValueError, match="patch_size=96 exceeds the model's S=64"):
        sr_pretrain.run(cfg.model_copy(update={"patch_size": 96}), tiny_model(), prepared, tmp_path)


def test_psr_sr_pretrain_command_takes_the_recipe_overrides(prepared, tmp_path, capsys):
    from psr.cli import main

    model = tmp_path / "model.yaml"
    model.write_text("name: psr\nimage_size: 64\nwidth: 0.0625\nsr_features: 4\nsr_res_blocks: 1\n")
    args = ["sr-pretrain", "--data", str(prepared), "--out", str(tmp_path / "sr")]
    args += ["--model-config", str(model), "--steps", "3", "--patch-size", "16", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "bicubic" in printed
    history = pd.read_csv(tmp_path / "sr" / "history.csv")
    assert history["step"].tolist() == [3]
