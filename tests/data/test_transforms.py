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
