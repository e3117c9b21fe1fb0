"""The CPU speed path (channels_last) keeps the paper's math: same outputs, gradients and BN stats.

``reference_forward`` is the paper's data flow written out plainly in NCHW from the model's own
modules, so any later speed change in ``PSRNet.forward`` is checked against it.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from psr.models import build_sr, create_model
from psr.models.layout import cpu_channels_last, set_cpu_channels_last
from psr.models.psr import PSRNet

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}
MEMBERS = [
    "psr",
    "vgg16",
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in ["psr_nostn", "psr_interp", "psr_espcn"]
    ),
]


def reference_forward(model: PSRNet, x: torch.Tensor) -> torch.Tensor:
    """Branch logits ``[B, n_branches, K]``, one branch after the other, contiguous NCHW."""
    t = model.stn(x.contiguous()).contiguous()  # [B, 3, S, S]
    inputs = [t]
    if len(model.branches) > 1:
        with torch.no_grad():
            low = F.adaptive_avg_pool2d(t, model.branches[0].size)  # [B, 3, S/f, S/f]
        inputs = [
            low if b.kind == "low" else model.sr_net(b.scale)(low) if b.kind == "sr" else t
            for b in model.branches
        ]
    logits = [
        model.head(model.high(low_net(inp)))  # [B, K]
        for low_net, inp in zip(model.low, inputs, strict=True)
    ]
    return torch.stack(logits, dim=1)


def _pair(name: str, dtype: torch.dtype = torch.float32) -> tuple[PSRNet, PSRNet]:
    """The model and an identical copy that runs the plain reference forward."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, image_size=64, **SMALL).to(dtype)
    # A trained-looking state: non-trivial BN running stats and an STN that is not the identity.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        if name != "vgg16" and name != "psr_nostn":
            model.stn.regressor[-1].weight.normal_(0, 1e-3)
    return model, copy.deepcopy(model)


@pytest.mark.parametrize("name", MEMBERS)
def test_eval_outputs_match_the_reference(name: str) -> None:
    model, ref = _pair(name)
    model.eval()
    ref.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(ref, x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["psr", "vgg16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_train_step_matches_the_reference(name: str, dtype: torch.dtype) -> None:
    """Same loss, gradients and BN running statistics (each branch through BN on its own).

    Gradients through BN amplify float32 rounding, so they are compared in float64.
    """
    model, ref = _pair(name, dtype)
    model.train()
    ref.train()
    x = torch.randn(4, 3, 64, 64, dtype=dtype)
    y = torch.tensor([0, 1, 2, 3])
    losses = []
    for forward in [model.forward, lambda v: reference_forward(ref, v)]:
        torch.manual_seed(1)  # the same dropout masks, drawn in the same branch order
        logits = forward(x)  # [B, n_branches, K]
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(logits.shape[1]))
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    for (key, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None and dtype == torch.float64:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-7, msg=key)
    for (key, a), b in zip(model.named_buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=key)


def test_channels_last_switch_changes_layout_not_results() -> None:
    model, ref = _pair("psr")
    set_cpu_channels_last(ref, False)
    assert not ref.sr.cpu_channels_last
    seen: list[bool] = []
    model.low[2][0].register_forward_hook(
        lambda _m, _i, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x), atol=1e-4, rtol=1e-4)
    assert seen == [True]
    assert PSRNet.cpu_channels_last  # the default


def test_cpu_channels_last_converts_only_4d_cpu_tensors_when_enabled() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert cpu_channels_last(x).is_contiguous(memory_format=torch.channels_last)
    assert cpu_channels_last(x, enabled=False) is x
    flat = torch.randn(2, 3)
    assert cpu_channels_last(flat) is flat


def test_edsr_on_its_own_keeps_its_math_in_channels_last() -> None:
    """SR pre-training runs the EDSR alone: same output and gradients with and without."""
    torch.manual_seed(0)
    fast = build_sr("edsr", 2, features=8, res_blocks=2).double()
    plain = set_cpu_channels_last(copy.deepcopy(fast), False)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    outputs = []
    for net in (fast, plain):
        out = net(x)  # [2, 3, 32, 32]
        out.square().sum().backward()
        outputs.append(out)
    assert outputs[0].is_contiguous(memory_format=torch.channels_last)
    assert outputs[1].is_contiguous()
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-10, rtol=1e-10)
    for p, q in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-9)


def test_shared_high_part_sees_each_branch_separately_in_training() -> None:
    """Per-branch BatchNorm batch statistics: ``high`` runs once per branch on B images."""
    model, _ = _pair("psr")
    batches: list[int] = []
    model.high.register_forward_hook(lambda _m, inp, _o: batches.append(inp[0].shape[0]))
    model.train()(torch.randn(4, 3, 64, 64))
    assert batches == [4, 4, 4]
