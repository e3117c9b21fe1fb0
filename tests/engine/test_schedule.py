import math

import pytest
import torch
from torch import nn

from psr.engine.config import FERPLUS_LRS, PhaseConfig, TrainConfig
from psr.engine.schedule import SGDW, build_one_cycle, build_optimizer, expand_lrs


def annealing_cos(start: float, end: float, pct: float) -> float:
    """fastai v1's annealing_cos."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


class ThreeGroups(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 3)

    def param_groups(self):
        return [list(self.a.parameters()), list(self.b.parameters()), list(self.c.parameters())]


def _run(phase: PhaseConfig, steps: int):
    model = ThreeGroups()
    opt = build_optimizer(model, phase)
    sched = build_one_cycle(opt, phase, steps)
    lrs, moms = [], []
    for _ in range(steps):
        group = opt.param_groups[2]
        lrs.append(group["lr"])
        moms.append(group["betas"][0] if "betas" in group else group["momentum"])
        opt.step()
        sched.step()
    return lrs, moms


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_cycle_matches_fastai_formulas(optimizer):
    steps, peak = 101, 1e-3
    phase = PhaseConfig(optimizer=optimizer, lrs=(1e-5, 5e-4, peak))
    lrs, moms = _run(phase, steps)
    warm = 0.3 * steps - 1  # torch's peak step (fastai: int(0.3 * steps), one later)
    start, final = peak / 25, peak / 25e4
    assert lrs[0] == pytest.approx(start)
    assert max(lrs) == pytest.approx(peak, rel=1e-3)
    assert lrs[-1] == pytest.approx(final)
    assert moms[0] == pytest.approx(0.95) and moms[-1] == pytest.approx(0.95)
    assert min(moms) == pytest.approx(0.85, abs=1e-4)
    for k in range(steps):
        if k <= warm:
            lr, mom = annealing_cos(start, peak, k / warm), annealing_cos(0.95, 0.85, k / warm)
        else:
            pct = (k - warm) / (steps - 1 - warm)
            lr, mom = annealing_cos(peak, final, pct), annealing_cos(0.85, 0.95, pct)
        assert lrs[k] == pytest.approx(lr, rel=1e-6), k
        assert moms[k] == pytest.approx(mom, rel=1e-6), k


def test_discriminative_lrs_follow_param_groups():
    model = ThreeGroups()
    phase = PhaseConfig(lrs=(1e-5, 5e-4, 1e-3))
    opt = build_optimizer(model, phase)
    build_one_cycle(opt, phase, 10)
    assert [g["params"] for g in opt.param_groups] == model.param_groups()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5 / 25, 5e-4 / 25, 1e-3 / 25])
    assert expand_lrs([0.1], 3) == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="3 param groups"):
        expand_lrs([0.1, 0.2], 3)


def test_optimisers_and_decoupled_weight_decay():
    model = ThreeGroups()
    adamw = build_optimizer(model, PhaseConfig())
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.95, 0.99) and adamw.defaults["weight_decay"] == 1e-2
    sgd = build_optimizer(model, PhaseConfig(optimizer="sgd", moms=None, lrs=(0.5,)))
    assert isinstance(sgd, SGDW) and sgd.param_groups[0]["momentum"] == 0.9
    before = model.a.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sgd.step()  # zero gradient: only the decay acts, w * (1 - lr * wd)
    assert torch.allclose(model.a.weight, before * (1 - 0.5 * 1e-2))


def test_paper_defaults():
    cfg = TrainConfig()
    assert cfg.phase1.optimizer == "adamw" and cfg.phase2.optimizer == "sgd"
    assert cfg.phase1.lrs == FERPLUS_LRS == cfg.phase2.lrs
    assert (cfg.phase1.epochs, cfg.phase2.epochs, cfg.batch_size) == (30, 30, 64)
    assert cfg.phase1.final_div == 25e4 and cfg.phase1.moms == (0.95, 0.85)
    raf = TrainConfig.rafdb()
    assert (raf.phase2.epochs, raf.batch_size, raf.phase1.lrs[1]) == (20, 32, 5e-3)
    with pytest.raises(ValueError):
        TrainConfig(epochs=3)
    with pytest.raises(ValueError, match="positive"):
        PhaseConfig(lrs=(0.0,))


def test_a_run_needs_at_least_one_epoch():
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(phase1=PhaseConfig(epochs=0), phase2=PhaseConfig(epochs=0))


def test_an_unknown_loss_is_a_config_error():
    """Caught when params.yaml is read, not after the data loaders are built."""
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; valid: \['pdls'"):
        TrainConfig(loss={"name": "hinge"})
