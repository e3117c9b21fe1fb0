import math

import pytest
import torch

from psr.engine import NonFiniteLossError, fit
from psr.engine.checkpoint import load_state


class Interrupt(Exception):
    pass


def _interrupt_after(epoch: int):
    def callback(e, metrics):
        if e == epoch:
            raise Interrupt(f"stop after epoch {e}")

    return callback


def _fit(kit, cfg, out, model=None, **kwargs):
    model = model or kit.tiny_model()
    result = fit(
        model,
        kit.make_split(48),
        kit.make_split(24, seed=1),
        cfg,
        out,
        model_config=kit.model_config,
        **kwargs,
    )
    return model, result


def test_loss_goes_down_and_valid_accuracy_rises(kit, tmp_path):
    cfg = kit.tiny_config(epochs1=6, epochs2=0, augment=kit.no_aug)
    _, result = _fit(kit, cfg, tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.best_metric > 0.8
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    keys = {"train_loss", "train_acc", "valid_loss", "valid_acc", "images_per_s", "lr_0", "lr_2"}
    assert keys <= set(result.history[0])


def test_callbacks_get_every_epoch_across_both_phases(kit, tmp_path):
    seen = []
    cfg = kit.tiny_config(epochs1=2, epochs2=2)
    _, result = _fit(kit, cfg, tmp_path, callbacks=[lambda e, m: seen.append((e, m["phase"]))])
    # epochs are numbered from 1 in the callbacks, the history and best.pt, as in the log lines
    assert seen == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_two_phases_switch_optimiser_and_restart_the_cycle(kit, tmp_path):
    cfg = kit.tiny_config(epochs1=1, epochs2=1)
    with pytest.raises(Interrupt):
        _fit(kit, cfg, tmp_path, callbacks=[_interrupt_after(1)])
    phase1 = load_state(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert all("betas" in g for g in phase1)  # AdamW

    _, result = _fit(kit, cfg, tmp_path, resume=True)
    phase2 = load_state(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert all("decoupled_weight_decay" in g and "betas" not in g for g in phase2)  # SGDW
    # each phase ends its own one-cycle at peak / 25e4
    for h in result.history:
        assert h["lr_1"] == pytest.approx(5e-2 / 25e4, rel=1e-6)


def test_discriminative_lrs_reach_the_right_groups(kit, tmp_path):
    cfg = kit.tiny_config(epochs1=1, epochs2=0)
    _, result = _fit(kit, cfg, tmp_path)
    state = load_state(tmp_path / "last.pt")
    groups = state["optimizer"]["param_groups"]
    model = kit.tiny_model()
    sizes = [len(g) for g in model.param_groups()]
    assert [len(g["params"]) for g in groups] == sizes
    assert [g["max_lr"] for g in groups] == [1e-3, 5e-2, 5e-2]
    assert result.history[0]["lr_0"] == pytest.approx(1e-3 / 25e4)


@pytest.mark.parametrize("stop_after", [1, 2], ids=["mid-phase", "at-the-phase-hand-over"])
def test_resume_reproduces_an_uninterrupted_run_exactly(kit, tmp_path, stop_after):
    cfg = kit.tiny_config(epochs1=2, epochs2=1, sampler="balanced")
    straight, _ = _fit(kit, cfg, tmp_path / "straight")

    with pytest.raises(Interrupt):
        _fit(kit, cfg, tmp_path / "resumed", callbacks=[_interrupt_after(stop_after)])
    assert load_state(tmp_path / "resumed" / "last.pt")["epoch"] == stop_after
    resumed, result = _fit(
        kit, cfg, tmp_path / "resumed", model=kit.tiny_model(seed=5), resume=True
    )

    assert len(result.history) == 3
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_different_recipe(kit, tmp_path):
    _fit(kit, kit.tiny_config(epochs1=1, epochs2=0), tmp_path)
    with pytest.raises(ValueError, match="phase1"):
        _fit(kit, kit.tiny_config(epochs1=2, epochs2=0), tmp_path, resume=True)


def test_auto_resume_continues_only_the_same_run(kit, tmp_path, caplog):
    """``resume="auto"``: same recipe and identity -> continue; another identity, another
    recipe or an unreadable file -> start fresh, saying why; ``resume=True`` refuses them."""
    caplog.set_level("INFO", logger="psr.engine.loop")
    cfg = kit.tiny_config(epochs1=2, epochs2=0)
    ours = {"data": "abc", "prior": "p1"}
    with pytest.raises(Interrupt):
        _fit(kit, cfg, tmp_path, callbacks=[_interrupt_after(1)], identity=ours)
    assert load_state(tmp_path / "last.pt")["identity"] == ours
    saved = (tmp_path / "last.pt").read_bytes()

    _, result = _fit(kit, cfg, tmp_path, resume="auto", identity=ours)
    assert "resuming" in caplog.text and len(result.history) == 2

    for identity, other, why in (
        ({"data": "xyz", "prior": "p1"}, cfg, "it was trained on other data"),
        (ours, kit.tiny_config(epochs1=3, epochs2=0), "the training config differs in"),
    ):
        (tmp_path / "last.pt").write_bytes(saved)
        caplog.clear()
        _, result = _fit(kit, other, tmp_path, resume="auto", identity=identity)
        assert why in caplog.text and "starting from scratch" in caplog.text
        assert len(result.history) == other.total_epochs
        (tmp_path / "last.pt").write_bytes(saved)
        with pytest.raises(ValueError, match=why):
            _fit(kit, other, tmp_path, resume=True, identity=identity)

    (tmp_path / "last.pt").write_bytes(saved[: len(saved) // 2])  # truncated
    caplog.clear()
    _, result = _fit(kit, cfg, tmp_path, resume="auto", identity=ours)
    assert "not a loadable training checkpoint" in caplog.text and len(result.history) == 2


def test_resume_of_a_finished_run_trains_nothing(kit, tmp_path):
    cfg = kit.tiny_config(epochs1=1, epochs2=0)
    first, _ = _fit(kit, cfg, tmp_path)
    again, result = _fit(kit, cfg, tmp_path, model=kit.tiny_model(seed=3), resume=True)
    assert len(result.history) == 1
    assert all(torch.equal(first.state_dict()[k], v) for k, v in again.state_dict().items())


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(kit, tmp_path):
    model = kit.tiny_model()
    forward = model.forward
    calls = {"train": 0}

    def poisoned(x):
        out = forward(x)
        if model.training:
            calls["train"] += 1
            if calls["train"] > 7:  # 48 images / batch 8 = 6 steps per epoch: fails in epoch 2
                return out * float("nan")
        return out

    model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match=r"phase 1, epoch 2/3, step 2/6"):
        _fit(kit, kit.tiny_config(), tmp_path, model=model)
    state = load_state(tmp_path / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_early_stopping_ends_the_run(kit, tmp_path):
    from psr.engine import PhaseConfig

    # lrs too small to change the predictions: valid accuracy never improves after epoch 1
    frozen = {"lrs": (1e-9,)}
    cfg = kit.tiny_config(
        phase1=PhaseConfig(epochs=5, **frozen),
        phase2=PhaseConfig(epochs=5, optimizer="sgd", **frozen),
        early_stopping=2,
        selection="best_accuracy",
    )
    _, result = _fit(kit, cfg, tmp_path)
    assert result.stopped_early
    assert result.best_epoch == 1 and len(result.history) == 3
    assert load_state(tmp_path / "last.pt")["stopped"]


def test_soft_targets_train_with_a_distribution_loss(kit, tmp_path):
    cfg = kit.tiny_config(epochs1=1, epochs2=0, loss={"name": "soft_ce"})
    split = kit.make_split(24, soft=True)
    result = fit(
        kit.tiny_model(),
        split,
        kit.make_split(12, seed=1),
        cfg,
        tmp_path,
        model_config=kit.model_config,
    )
    assert math.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("channels", [1, 3])
def test_best_checkpoint_of_a_real_psr_model_loads_back(tmp_path, kit, channels):
    from psr.inference import Predictor
    from psr.models import create_model, load_model

    torch.manual_seed(0)
    model = create_model(
        "psr", num_classes=3, image_size=64, width=0.0625, sr_features=8, sr_res_blocks=1
    )
    cfg = kit.tiny_config(epochs1=1, epochs2=0, batch_size=4)
    split = kit.make_split(8, channels=channels)
    valid = kit.make_split(4, seed=1, channels=channels)
    result = fit(model, split, valid, cfg, tmp_path, class_names=kit.classes)
    loaded, info = load_model(result.best_checkpoint)
    assert info["class_names"] == list(kit.classes) and info["image_size"] == 64
    assert info["extra"]["epoch"] == 1
    # the training images' channels: a gray-trained model makes the Predictor convert to gray
    assert info["extra"]["channels"] == channels
    # and its augmentation recipe, which test-time augmentation reuses
    assert info["extra"]["augment"] == cfg.augment.model_dump()
    predictor = Predictor.from_checkpoint(result.best_checkpoint, detect=False)
    assert predictor.grayscale == (channels == 1)
    trained = model.state_dict()  # the only epoch is the best one
    assert all(torch.equal(v, trained[k].cpu()) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_decides_the_cpu_layout_inside_psr(tmp_path, kit, channels_last):
    from psr.models import create_model
    from psr.models.layout import set_cpu_channels_last

    torch.manual_seed(0)
    model = create_model(
        "psr", num_classes=3, image_size=64, width=0.0625, sr_features=8, sr_res_blocks=1
    )
    set_cpu_channels_last(model, not channels_last)  # fit must switch it, either way
    cfg = kit.tiny_config(epochs1=1, epochs2=0, batch_size=4, channels_last=channels_last)
    fit(model, kit.make_split(8), kit.make_split(4, seed=1), cfg, tmp_path)
    layouts = [m.cpu_channels_last for m in model.modules() if hasattr(m, "cpu_channels_last")]
    assert len(layouts) >= 2 and set(layouts) == {channels_last}  # PSRNet and its SR nets


def test_worker_processes_do_not_change_the_result(kit, tmp_path):
    """Augmentation is seeded per sample: 0 or 2 (persistent) workers train identically."""
    cfg = kit.tiny_config(epochs1=2, epochs2=0)
    in_process, _ = _fit(kit, cfg, tmp_path / "w0")
    workers, _ = _fit(kit, cfg.model_copy(update={"workers": 2}), tmp_path / "w2")
    for key, value in in_process.state_dict().items():
        assert torch.equal(value, workers.state_dict()[key]), key


def test_progress_bars_and_epoch_log(kit, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="psr.engine.loop")
    _fit(kit, kit.tiny_config(epochs1=1, epochs2=0, progress=True), tmp_path)
    assert "epochs" in capsys.readouterr().err  # tqdm draws on stderr
    assert "epoch 1/1 (phase 1): train loss" in caplog.text


def test_resume_at_a_phase_boundary_keeps_the_fp16_loss_scale(kit, tmp_path):
    """The GradScaler runs across both phases: a run resumed after phase 1 must not restart it."""
    cfg = kit.tiny_config(epochs1=1, epochs2=1, amp="fp16")
    _fit(kit, cfg, tmp_path / "straight")
    with pytest.raises(Interrupt):
        _fit(kit, cfg, tmp_path / "resumed", callbacks=[_interrupt_after(1)])
    _fit(kit, cfg, tmp_path / "resumed", resume=True)
    straight = load_state(tmp_path / "straight" / "last.pt")["scaler"]
    resumed = load_state(tmp_path / "resumed" / "last.pt")["scaler"]
    assert straight["_growth_tracker"] == 12  # 6 steps per epoch, none skipped
    assert resumed == straight


def test_non_finite_weights_after_an_epoch_are_not_checkpointed(kit, tmp_path):
    """The last step of an epoch can leave NaN weights with a finite loss: validation sees them."""
    model = kit.tiny_model()
    forward = model.forward
    calls = {"eval": 0}

    def broken_after_first_epoch(x):
        out = forward(x)
        if not model.training:
            calls["eval"] += 1
            if calls["eval"] > 3:  # 24 valid images / batch 8: epoch 2's validation
                return out * float("nan")
        return out

    model.forward = broken_after_first_epoch
    with pytest.raises(NonFiniteLossError, match=r"validation loss is nan after phase 1, epoch 2"):
        _fit(kit, kit.tiny_config(), tmp_path, model=model)
    state = load_state(tmp_path / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["extra"]["epoch"] == 1


def test_selection_rules_on_a_made_up_history():
    from psr.engine.loop import _best_epoch

    history = [
        {"phase": 1, "valid_loss": 1.0, "valid_acc": 0.5},
        {"phase": 1, "valid_loss": 0.5, "valid_acc": 0.6},
        {"phase": 1, "valid_loss": 0.7, "valid_acc": 0.9},
        {"phase": 2, "valid_loss": 0.9, "valid_acc": 0.7},
        {"phase": 2, "valid_loss": 0.8, "valid_acc": 0.6},
        {"phase": 2, "valid_loss": 0.8, "valid_acc": 0.8},
    ]
    # official: the last phase's lowest valid loss (first of ties), phase 1's better epochs lose
    assert _best_epoch(history, "official") == 4
    assert _best_epoch(history[:3], "official") == 1  # within phase 1
    assert _best_epoch(history, "best_accuracy") == 2


@pytest.mark.parametrize("selection", ["official", "best_accuracy"])
def test_phase_two_starts_from_the_selected_epoch_of_phase_one(kit, tmp_path, selection):
    """After phase 1 the test scrambles the weights: the official hand-over reloads phase 1's
    selected epoch (best.pt), best_accuracy continues from the (scrambled) last weights.
    Phase 2's lr is ~0, so its first epoch shows where it started."""
    from psr.engine import PhaseConfig
    from psr.engine.loop import _best_epoch

    model = kit.tiny_model()
    cfg = kit.tiny_config(
        phase1=PhaseConfig(epochs=3, lrs=(1e-3, 5e-2, 5e-2)),
        phase2=PhaseConfig(epochs=2, optimizer="sgd", lrs=(1e-12,)),
        selection=selection,
    )
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def params() -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in model.named_parameters()}

    def callback(epoch, metrics):
        if epoch == 3:  # phase 1's last epoch is recorded: best.pt holds its selected epoch
            best = torch.load(tmp_path / "best.pt", weights_only=True)["state_dict"]
            seen["phase1_best"] = {k: best[k] for k, _ in model.named_parameters()}
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p))
            seen["scrambled"] = params()
        if epoch == 4:
            seen["phase2_first"] = params()

    _, result = _fit(kit, cfg, tmp_path, model=model, callbacks=[callback])
    start = "phase1_best" if selection == "official" else "scrambled"
    other = "scrambled" if selection == "official" else "phase1_best"
    for key, value in seen["phase2_first"].items():
        torch.testing.assert_close(value, seen[start][key], atol=1e-6, rtol=0)
    assert any(not torch.allclose(seen[other][k], v) for k, v in seen["phase2_first"].items())
    assert result.best_epoch == _best_epoch(result.history, selection) + 1  # index -> number
    if selection == "official":
        phase2 = result.history[3:]
        assert result.best_epoch == 4 + min(range(2), key=lambda i: phase2[i]["valid_loss"])
    best = torch.load(tmp_path / "best.pt", weights_only=True)["extra"]
    assert best["epoch"] == result.best_epoch
