"""Parameter count of the paper's configuration = the sum of its parts, counted independently."""

from __future__ import annotations

import torchvision

from psr.models import create_model


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_configuration_parameter_count() -> None:
    model = create_model("psr", num_classes=8, image_size=96)  # width 1, EDSR 64x16
    vgg = torchvision.models.vgg16_bn(weights=None).features
    low = count(vgg[:24])  # conv1_1 .. conv3_3 with BatchNorm
    high = count(vgg[24:])
    assert low == sum(
        conv(a, b) + 2 * b
        for a, b in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    )
    head = 2 * 1024 + linear(1024, 512) + 2 * 512 + linear(512, 8)
    side = ((96 - 6) // 2 - 4) // 2  # localisation map: conv7, pool2, conv5, pool2 -> 20
    stn = conv(3, 8, 7) + conv(8, 10, 5) + linear(10 * side * side, 32) + linear(32, 6)
    edsr = conv(3, 64) + 16 * 2 * conv(64, 64) + conv(64, 64) + conv(64, 256) + conv(64, 3)
    assert count(model.stn) == stn
    assert count(model.sr) == edsr
    assert count(model.head) == head
    assert count(model) == 3 * low + high + head + stn + edsr
