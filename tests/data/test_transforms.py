import random

import cv2
import numpy as np
import pytest
import torch

from psr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TTA_BETA,
    AugmentConfig,
    as_rgb,
    blend_tta,
    eval_transform,
    train_transform,
    tta_transforms,
)

S = 32


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 1), (20, 24, 3)])
@pytest.mark.parametrize("make", [train_transform, eval_transform])
def test_output_shape_dtype_for_gray_and_rgb(make, shape):
    out = make(S)(_image(shape))
    assert out.shape == (3, S, S)
    assert out.dtype == torch.float32


def test_eval_is_imagenet_normalisation_of_the_resized_image():
    image = np.full((10, 10, 3), 128, dtype=np.uint8)
    out = eval_transform(S)(image)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 5, 5], expected, atol=1e-5)


def test_grayscale_is_repeated_into_three_equal_channels():
    out = eval_transform(S)(_image((16, 16, 1)))
    # equal pixel values in every channel, so (x * std + mean) agrees across channels
    raw = (
        out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)


def test_as_rgb_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="expected an image"):
        as_rgb(np.zeros((4, 4, 2), dtype=np.uint8))


def test_train_augmentation_is_random_but_reproducible_after_reseed():
    transform = train_transform(S)
    image = _image((S, S, 3))
    transform.reseed(7)
    a = transform(image)
    transform.reseed(7)
    b = transform(image)
    transform.reseed(8)
    c = transform(image)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_augmentation_equals_eval():
    aug = AugmentConfig(flip=False, rotate=0, zoom=1.0, lighting=0, warp=0)
    image = _image((S, S, 3))
    assert torch.equal(train_transform(S, aug)(image), eval_transform(S)(image))


def test_rafdb_preset_and_unknown_field():
    assert AugmentConfig.rafdb().rotate == 15 and AugmentConfig.rafdb().zoom == 1.1
    with pytest.raises(ValueError):
        AugmentConfig(rotation=10)


def test_tta_views_are_corner_crops_with_flips():
    aug = AugmentConfig(rotate=0, lighting=0, warp=0)  # keep only the deterministic view framing
    views = tta_transforms(S, aug)
    assert len(views) == 8
    ramp = np.tile(np.arange(S, dtype=np.uint8)[None, :, None] * 8, (S, 1, 3))  # brighter right
    outs = [v(ramp) for v in views]
    assert all(o.shape == (3, S, S) for o in outs)
    # views 0 (left corners) and 2 (right corners): the right-anchored crop is brighter on average
    assert outs[2].mean() > outs[0].mean()
    # view 4 is view 0 flipped horizontally
    assert torch.allclose(outs[4], outs[0].flip(-1))


def test_blend_tta_weights():
    plain = torch.tensor([[1.0, 0.0]])
    views = [torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]])]
    assert torch.allclose(blend_tta(plain, views), torch.tensor([[TTA_BETA, 1 - TTA_BETA]]))
    with pytest.raises(ValueError):
        blend_tta(plain, [])


def _unnormalise(out: torch.Tensor) -> torch.Tensor:
    """[3, S, S] normalised -> pixel values 0..255."""
    std, mean = (
        torch.tensor(IMAGENET_STD)[:, None, None],
        torch.tensor(IMAGENET_MEAN)[:, None, None],
    )
    return (out * std + mean) * 255


def test_zoom_is_isotropic_and_never_shows_the_border():
    """fastai's zoom: one scale for both axes, a random centre inside the zoomed-out margin."""
    aug = AugmentConfig(flip=False, rotate=0, lighting=0, warp=0, zoom=1.2, p_affine=1.0)
    transform = train_transform(S, aug)
    ramps = np.zeros((S, S, 3), dtype=np.uint8)
    ramps[..., 0] = np.arange(S)[None, :] * 8  # x coordinate
    ramps[..., 1] = np.arange(S)[:, None] * 8  # y coordinate
    for seed in range(20):
        transform.reseed(seed)
        raw = _unnormalise(transform(ramps))
        x, y = raw[0].mean(0), raw[1].mean(1)  # [S] per column, [S] per row
        # strictly increasing: no reflected border anywhere
        assert (x.diff() > 0).all() and (y.diff() > 0).all(), seed
        slope_x, slope_y = (x[-1] - x[0]) / (S - 1), (y[-1] - y[0]) / (S - 1)
        assert float(slope_x) == pytest.approx(float(slope_y), rel=0.04), seed
        assert 8 / 1.2 * 0.97 <= slope_x <= 8 * 1.01, seed


def test_lighting_works_in_logit_space_like_fastai():
    """brightness: logit(x) + logit(U(0.4, 0.6)); contrast: logit(x) * logU(0.8, 1.25)."""
    aug = AugmentConfig(flip=False, rotate=0, zoom=1.0, warp=0, lighting=0.2, p_lighting=1.0)
    transform = train_transform(S, aug)
    image = np.full((S, S, 3), 128, dtype=np.uint8)
    image[:4], image[-4:] = 0, 255  # black and white rows
    mids, extremes = [], []
    for seed in range(40):
        transform.reseed(seed)
        raw = _unnormalise(transform(image))
        mids.append(float(raw[:, S // 2, S // 2].mean()))
        extremes.append((float(raw[:, 0].mean()), float(raw[:, -1].mean())))
    # 128 -> sigmoid((logit(128/255) + [-0.405, 0.405]) * [0.8, 1.25]) * 255 in [95, 161]
    assert 94 <= min(mids) < 112 and 144 < max(mids) <= 162
    # saturated pixels stay saturated (an additive brightness would lift black by up to 51)
    assert all(black < 1 and white > 254 for black, white in extremes)


def test_symmetric_warp_stretches_one_edge_like_fastai():
    """fastai symmetric_warp, m = [0.2, 0, 0, 0]: the right edge's corners move from y = -+1 to
    -+1.2, so the right column shows the middle 1/1.2 of the input; the left column is kept."""
    from psr.data.transforms import SymmetricWarp

    ramp = np.zeros((S, S, 3), dtype=np.uint8)
    ramp[..., 1] = np.arange(S)[:, None] * 8  # y coordinate
    out = SymmetricWarp(0.2, border_mode=cv2.BORDER_REFLECT_101, fill=0, p=1.0).apply(
        ramp, m=[0.2, 0.0, 0.0, 0.0]
    )
    assert np.array_equal(out[:, 0], ramp[:, 0])
    right = out[:, -1, 1].astype(float)
    span = (S - 1) * 8 / 1.2
    assert right[-1] - right[0] == pytest.approx(span, abs=8)
    assert (right[0] + right[-1]) / 2 == pytest.approx((S - 1) * 4, abs=4)  # centred


def test_warp_draws_each_edge_magnitude_uniformly_and_changes_the_image():
    from psr.data.transforms import SymmetricWarp

    warp = SymmetricWarp(0.2, border_mode=cv2.BORDER_REFLECT_101, fill=0, p=1.0)
    draws = []
    for seed in range(200):
        warp.set_random_state(np.random.default_rng(seed), random.Random(seed))
        draws += warp.get_params()["m"]
    assert -0.2 <= min(draws) < -0.18 and 0.18 < max(draws) <= 0.2
    aug = AugmentConfig(flip=False, rotate=0, zoom=1.0, lighting=0, warp=0.2, p_affine=1.0)
    image = _image((S, S, 3))
    assert not torch.equal(train_transform(S, aug)(image), eval_transform(S)(image))
