import json
import math

import gpu  # bench/gpu.py, loaded by conftest.py
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cpu_run_writes_the_report(tmp_path, capsys):
    args = ["--device", "cpu", "--out", str(tmp_path), "--batch-size", "4", "--steps", "1"]
    assert gpu.main([*args, "--train-steps", "8"]) == 0

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    keys = {"device_name", "torch", "cuda", "config", "variants", "loader", "training"}
    assert keys | {"loss_fell", "wall_s"} <= report.keys()
    assert report["device"] == "cpu" and report["config"]["batch_size"] == 4
    assert [row["variant"] for row in report["variants"]] == ["fp32", "fp32 + channels_last"]
    for row in report["variants"]:
        assert row["images_per_s"] > 0 and row["peak_memory_mib"] is None
    assert report["variants"][0]["vs_fp32"] == 1.0
    assert report["loader"]["images_per_s"] > 0

    training = report["training"]
    assert training["steps_per_epoch"] == 8 // gpu.EPOCHS
    assert len(training["curve"]) == gpu.EPOCHS
    for epoch in training["curve"]:
        assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["valid_loss"])
    curve = training["curve"]
    assert report["loss_fell"] == (curve[-1]["train_loss"] < curve[0]["train_loss"])

    table = (tmp_path / "gpu_check.md").read_text()
    assert "| fp32 + channels_last |" in table and "| loader (48 px gray -> 64" in table
    assert f"| {gpu.EPOCHS} | {curve[-1]['train_loss']:.4f} |" in table
    # the atomic writes left no scratch files, and fit's checkpoints went elsewhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    assert "elapsed" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device")
@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_without_cuda_it_says_to_pass_device_cpu(tmp_path, capsys, device):
    assert gpu.main(["--device", device, "--out", str(tmp_path / "out")]) == 1
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
