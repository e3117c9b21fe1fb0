import json

import pandas as pd
import pytest
import torch

from psr.jobs import sr_pretrain


@pytest.fixture
def cfg():
    return sr_pretrain.SRPretrainConfig(
        epochs=2, batch_size=16, lr=3e-3, max_images=48, valid_images=16, device="cpu"
    )


def test_pretraining_writes_weights_history_and_metrics(prepared, tmp_path, cfg, tiny_model):
    seen = []
    result = sr_pretrain.run(
        cfg,
        tiny_model(),
        prepared,
        tmp_path / "sr",
        reports=tmp_path / "reports",
        callbacks=[lambda epoch, m: seen.append(epoch)],
    )
    assert seen == [0, 1]
    assert result.weights == tmp_path / "sr" / "sr_x2.pt"
    info = json.loads((tmp_path / "sr" / "sr.json").read_text())
    assert info == {"weights": str(result.weights), "kind": "edsr", "scale": 2}
    history = pd.read_csv(tmp_path / "reports" / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics == pytest.approx(result.metrics)
    assert set(metrics) >= {"psnr_sr", "psnr_bicubic", "psnr_gain", "train_l1"}
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
