"""BatchNorm folding for inference: the same function, one layer fewer, the original kept."""

from __future__ import annotations

import torch
from torch import nn

from psr.models import create_model
from psr.models.fusion import fuse_conv_bn


def test_folded_model_computes_the_same_and_leaves_the_original_alone() -> None:
    torch.manual_seed(0)
    model = create_model("psr", num_classes=5, image_size=64, width=0.125, sr_res_blocks=1)
    model.train()(torch.randn(4, 3, 64, 64))  # non-default BatchNorm statistics
    model.train()
    folded = fuse_conv_bn(model)
    assert model.training and not folded.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in folded.head)  # no conv before it: kept
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), atol=1e-4, rtol=1e-4)
