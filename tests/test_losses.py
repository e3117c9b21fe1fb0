"""Losses: PDLS against its special cases, branch averaging, weights, stability, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psr.losses import LOSS_NAMES, PDLSLoss, build_loss

K = 7


def random_prior(k: int = K, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, k, generator=g).softmax(dim=1)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, K, generator=g) * 3, torch.tensor([0, 1, 2, 3, 6, 6])


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.0])
def test_pdls_with_uniform_prior_is_torch_label_smoothing(batch, alpha: float) -> None:
    logits, y = batch
    expected = F.cross_entropy(logits, y, label_smoothing=1 - alpha)
    torch.testing.assert_close(build_loss("uniform_ls", K, alpha=alpha)(logits, y), expected)
    uniform = np.full((K, K), 1 / K)
    torch.testing.assert_close(
        build_loss("pdls", K, prior=uniform, alpha=alpha)(logits, y), expected
    )


def test_pdls_follows_its_definition(batch) -> None:
    logits, y = batch
    prior, alpha = random_prior(), 0.8
    q = alpha * F.one_hot(y, K) + (1 - alpha) * prior[y]
    expected = -(q * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(PDLSLoss(prior, alpha)(logits, y), expected)
    torch.testing.assert_close(PDLSLoss(prior, 1.0)(logits, y), F.cross_entropy(logits, y))


def test_soft_ce_with_one_hot_targets_is_ce(batch) -> None:
    logits, y = batch
    soft = build_loss("soft_ce", K)
    torch.testing.assert_close(soft(logits, F.one_hot(y, K).float()), F.cross_entropy(logits, y))
    votes = torch.rand(6, K).softmax(1)
    torch.testing.assert_close(soft(logits, votes), F.cross_entropy(logits, votes))
    torch.testing.assert_close(build_loss("ce", K)(logits, y), F.cross_entropy(logits, y))


def test_branch_logits_average_the_per_branch_losses(batch) -> None:
    logits, y = batch
    branches = torch.stack([logits, logits * 0.5, -logits], dim=1)  # [B, 3, K]
    for name in LOSS_NAMES:
        loss = build_loss(name, K, prior=random_prior())
        expected = torch.stack([loss(branches[:, i], y) for i in range(3)]).mean()
        torch.testing.assert_close(loss(branches, y), expected)


def test_class_weights_match_torch_weighted_cross_entropy(batch) -> None:
    logits, y = batch
    w = torch.arange(1.0, K + 1)
    torch.testing.assert_close(
        build_loss("ce", K, class_weights=w)(logits, y), F.cross_entropy(logits, y, weight=w)
    )
    branches = torch.stack([logits, logits], dim=1)
    pdls = build_loss("pdls", K, prior=random_prior(), class_weights=w.tolist())
    torch.testing.assert_close(pdls(branches, y), pdls(logits, y))


def test_focal_pdls_follows_its_definition_and_reduces_to_pdls(batch) -> None:
    logits, y = batch
    prior = random_prior()
    q = 0.8 * F.one_hot(y, K) + 0.2 * prior[y]
    p = logits.softmax(1)
    expected = -(q * (1 - p) ** 2 * p.log()).sum(1).mean()
    focal = build_loss("focal_pdls", K, prior=prior, alpha=0.8)
    torch.testing.assert_close(focal(logits, y), expected)
    torch.testing.assert_close(
        build_loss("focal_pdls", K, prior=prior, gamma=0.0)(logits, y),
        build_loss("pdls", K, prior=prior)(logits, y),
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_are_finite_for_extreme_logits(name: str) -> None:
    logits = torch.tensor([[1e4, -1e4, 0, 0, 0, 0, 0], [-1e4, 1e4, 0, 0, 0, 0, 0]])
    logits = logits.unsqueeze(1).repeat(1, 3, 1).requires_grad_()
    target = torch.tensor([1, 0])
    if name == "soft_ce":
        target = F.one_hot(target, K).float()
    loss = build_loss(name, K, prior=random_prior())(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_losses_can_be_minimised() -> None:
    torch.manual_seed(0)
    logits = torch.zeros(8, K, requires_grad=True)
    y = torch.arange(8) % K
    loss_fn = build_loss("focal_pdls", K, prior=random_prior())
    opt = torch.optim.SGD([logits], lr=5.0)
    first = loss_fn(logits, y).item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_sub_stochastic_prior_of_the_seven_class_protocol_is_accepted() -> None:
    prior = random_prior(8)[:7, :7]  # contempt dropped, rows not renormalised (official)
    assert build_loss("pdls", 7, prior=prior).prior.shape == (7, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "pdls"}, r"loss 'pdls' needs a prior matrix \[7, 7\]"),
        ({"name": "focal_pdls"}, "needs a prior"),
        ({"name": "pdls", "prior": np.eye(8)}, r"prior must be \[7, 7\], got \[8, 8\]"),
        ({"name": "pdls", "prior": 2 * np.eye(7)}, "prior is not row-stochastic"),
        ({"name": "pdls", "prior": -np.eye(7)}, "prior is not row-stochastic"),
        ({"name": "pdls", "prior": np.eye(7), "alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"name": "ce", "class_weights": [1.0, 2.0]}, "class_weights must be 7"),
        ({"name": "hinge"}, r"unknown loss 'hinge'; valid: \['pdls'"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_loss(num_classes=K, **kwargs)


def test_bad_inputs_are_clear_errors(batch) -> None:
    logits, y = batch
    loss = build_loss("uniform_ls", K)
    with pytest.raises(ValueError, match=r"logits must be \[B, 7\]"):
        loss(logits[:, :5], y)
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss(logits, y[:3])
    with pytest.raises(ValueError, match=r"target must be int labels \[B\] or a distribution"):
        loss(logits, torch.rand(6, 3))
    with pytest.raises(ValueError, match=r"ce expects int labels"):
        build_loss("ce", K)(logits, torch.rand(6, K))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_losses_keep_full_precision_under_autocast(batch, name: str) -> None:
    """The prior/weight products must not run in bf16 when the caller's forward is autocast."""
    logits, y = batch
    target = F.one_hot(y, K).float() * 0.7 + 0.3 / K if name == "soft_ce" else y
    loss = build_loss(name, K, prior=random_prior(), class_weights=torch.rand(K) + 0.5)
    expected = loss(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(logits, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
