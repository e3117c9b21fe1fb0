import random

import numpy as np
import pytest
import torch

from psr.engine.checkpoint import FORMAT, load_state, restore_rng_states, rng_states, save_atomic


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_atomic({"format": FORMAT, "rng": rng_states(torch.device("cpu"))}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_states(load_state(tmp_path / "s.pt")["rng"], torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_cuda_rng_state_is_the_training_device_only(monkeypatch):
    """get/set_rng_state_all would create a CUDA context on every GPU in every DDP process
    (and fail to restore on a machine with fewer GPUs)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("all devices"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("all devices"))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: calls.append(("get", d)) or "s")
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append(("set", d)))
    cuda3 = torch.device("cuda", 3)
    states = rng_states(cuda3)
    assert states["cuda"] == "s"
    restore_rng_states(states, cuda3)
    assert calls == [("get", cuda3), ("set", cuda3)]
    assert "cuda" not in rng_states(torch.device("cpu"))


def test_save_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"a": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises
        save_atomic({"a": lambda: 0}, path)  # not picklable
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class Payload:  # an arbitrary object: weights_only refuses to unpickle it
    pass


@pytest.mark.parametrize("payload", ["pickled", "truncated", "other"])
def test_a_refused_or_broken_checkpoint_is_one_clear_error(tmp_path, payload):
    path = tmp_path / "last.pt"
    if payload == "pickled":  # weights_only refuses arbitrary objects
        torch.save({"format": FORMAT, "obj": Payload()}, path)
    elif payload == "truncated":
        save_atomic({"format": FORMAT, "w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError) as err:
        load_state(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_a_state_with_0_based_epochs_is_refused_saying_why(tmp_path):
    """Format 1 numbered its history's epochs from 0: continuing it would mix two numberings."""
    path = tmp_path / "last.pt"
    save_atomic({"format": "psr-train-state/1", "epoch": 1, "history": [{"epoch": 0}]}, path)
    with pytest.raises(ValueError, match=r"older training state .*numbers epochs from 0"):
        load_state(path)
