"""The shared head matches fastai v1's (as the official PyramidShare builds it)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from psr.models.head import ConcatPool, build_head


def test_concat_pool_puts_max_before_average() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    pooled = ConcatPool()(x)  # [B, 2C, 1, 1]
    assert pooled.shape == (2, 6, 1, 1)
    torch.testing.assert_close(pooled[:, :3, 0, 0], x.amax(dim=(2, 3)))
    torch.testing.assert_close(pooled[:, 3:, 0, 0], x.mean(dim=(2, 3)))


def test_head_keeps_pytorchs_default_linear_init() -> None:
    """Default init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (std 1/sqrt(3 fan_in));
    kaiming-normal weights would have std sqrt(2 / fan_in) and zero biases."""
    torch.manual_seed(0)
    head = build_head(512, 8)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 8)]
    for m in linears:
        bound = 1 / math.sqrt(m.in_features)
        assert float(m.weight.abs().max()) <= bound
        assert math.isclose(float(m.weight.std()), bound / math.sqrt(3), rel_tol=0.1)
        assert float(m.bias.abs().max()) <= bound
        assert float(m.bias.abs().min()) < float(m.bias.abs().max())  # not zeroed


def test_head_layers_are_fastais_default() -> None:
    head = build_head(64, 7, hidden=64)
    kinds = [type(m).__name__ for m in head]
    assert kinds == [
        "ConcatPool", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d",
        "Dropout", "Linear",
    ]  # fmt: skip
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    assert head.eval()(torch.randn(3, 64, 5, 5)).shape == (3, 7)


def test_head_dropout_is_configurable_without_moving_a_layer() -> None:
    paper, plain = build_head(64, 7, hidden=64), build_head(64, 7, hidden=64, dropout=(0.0, 0.1))
    assert [m.p for m in plain if isinstance(m, nn.Dropout)] == [0.0, 0.1]
    plain.load_state_dict(paper.state_dict(), strict=True)  # same indices: files load


def test_head_refuses_a_dropout_that_is_not_two_probabilities() -> None:
    for bad in [(0.5,), (0.2, 1.0), (-0.1, 0.5)]:
        with pytest.raises(ValueError, match="dropout must be two probabilities"):
            build_head(64, 7, dropout=bad)
