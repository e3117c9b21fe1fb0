"""The PSR network's structural promises: STN identity, gradient isolation, sharing, training."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from torch import nn

from psr.losses import build_loss
from psr.models import create_model
from psr.models.stn import STN

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def _grad_norm(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


@pytest.mark.parametrize("size", [48, 96, 100])
def test_stn_is_identity_at_initialisation(size: int) -> None:
    x = torch.randn(3, 3, size, size)
    torch.testing.assert_close(STN(size)(x), x, atol=1e-4, rtol=1e-5)


def test_stn_switch_off_and_size_check() -> None:
    model = create_model("psr", stn=False, image_size=64, **SMALL)
    assert isinstance(model.stn, nn.Identity)
    with pytest.raises(ValueError, match="too small for the STN"):
        STN(16)


def test_low_resolution_branches_send_no_gradient_to_the_stn() -> None:
    torch.manual_seed(0)
    model = create_model("psr", num_classes=7, image_size=64, **SMALL).train()
    x = torch.randn(4, 3, 64, 64)
    logits = model(x)  # [B, 3, K]: low, SR x2 of low, full
    logits[:, :2].logsumexp(-1).sum().backward(retain_graph=True)
    assert _grad_norm(model.stn.parameters()) == 0
    assert _grad_norm(model.sr.parameters()) > 0  # the SR net still learns from its branch
    assert _grad_norm(model.low[2].parameters()) == 0
    logits[:, 2].logsumexp(-1).sum().backward()
    assert _grad_norm(model.stn.regressor[-1].parameters()) > 0  # the full branch trains the STN


def test_high_part_and_head_are_shared_by_all_branches() -> None:
    model = create_model("psr", num_classes=7, image_size=64, **SMALL).train()
    batches = []
    model.high.register_forward_hook(lambda _m, args, _o: batches.append(args[0].shape[0]))
    model(torch.randn(2, 3, 64, 64))
    assert batches == [2, 2, 2]  # training: one call per branch (BatchNorm stats per branch)
    batches.clear()
    model.eval()(torch.randn(2, 3, 64, 64))
    assert batches == [2, 4]  # eval: the same-size SR and full branches share one call
    keys = model.state_dict().keys()
    assert any(k.startswith("high.0.") for k in keys)
    assert not any(k.startswith(("high.1.0", "head.0.0")) for k in keys)
    assert len(model.low) == 3


def test_low_copies_start_equal_and_diverge_after_a_step() -> None:
    torch.manual_seed(0)
    model = create_model("psr", num_classes=7, image_size=64, **SMALL).train()
    first = [p.detach().clone() for p in model.low[0].parameters()]
    for copy in model.low[1:]:
        for a, b in zip(first, copy.parameters(), strict=True):
            torch.testing.assert_close(a, b)
    assert model.low[0][0].weight.data_ptr() != model.low[1][0].weight.data_ptr()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = build_loss("ce", 7)(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimiser.step()
    w = [copy[0].weight for copy in model.low]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["psr", "vgg16"])
def test_a_few_steps_drive_the_loss_down(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=64, **SMALL).train()
    x = torch.randn(8, 3, 64, 64)
    y = torch.arange(8) % 7
    loss_fn = build_loss("uniform_ls", 7, alpha=0.9)
    lrs = [1e-4, 1e-3, 1e-3]  # the paper's scale: 1e-2 overshoots with the default head init
    optimiser = torch.optim.Adam(
        [{"params": g, "lr": lr} for g, lr in zip(model.param_groups(), lrs, strict=True)]
    )
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_stn_runs_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    stn = STN(48)
    with torch.no_grad():  # a non-identity warp, so the grid's precision shows in the output
        stn.regressor[-1].bias.copy_(torch.tensor([0.9, 0.1, 0.05, -0.1, 0.95, 0.02]))
    x = torch.randn(2, 3, 48, 48)
    seen: list[torch.dtype] = []
    stn.regressor.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    expected = stn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stn(x.bfloat16())
    assert seen == [torch.float32, torch.float32]  # theta in float32, with autocast too
    assert out.dtype == torch.float32
    # only the bf16 input's rounding differs, not the grid: close to the float32 result
    torch.testing.assert_close(out, stn(x.bfloat16().float()), atol=1e-5, rtol=1e-5)
    assert float((out - expected).abs().max()) < 0.05


@pytest.mark.parametrize("multiples", [[1, 2, 1], [1, 2, 4, 1], [1]])
def test_eval_forward_equals_each_branch_on_its_own(multiples: list[int]) -> None:
    """Eval mode batches same-size branches through ``high`` and ``head``: a pure speedup."""
    torch.manual_seed(0)
    model = create_model("psr", num_classes=7, image_size=128, multiples=multiples, **SMALL)
    model.train()(torch.randn(4, 3, 128, 128))  # non-default BatchNorm statistics
    model.eval()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        inputs = model.branch_inputs(x)
        alone = [model.head(model.high(low(i))) for low, i in zip(model.low, inputs, strict=True)]
        torch.testing.assert_close(model(x), torch.stack(alone, dim=1), atol=1e-5, rtol=1e-5)


def test_training_forward_keeps_batchnorm_statistics_per_branch() -> None:
    torch.manual_seed(0)
    model = create_model("psr", num_classes=7, image_size=64, **SMALL).train()
    twin = deepcopy(model)
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    got = model(x)
    torch.manual_seed(1)  # the same dropout masks
    inputs = twin.branch_inputs(x)
    alone = [twin.head(twin.high(low(i))) for low, i in zip(twin.low, inputs, strict=True)]
    torch.testing.assert_close(got, torch.stack(alone, dim=1))
    torch.testing.assert_close(model.high[0][1].running_mean, twin.high[0][1].running_mean)
