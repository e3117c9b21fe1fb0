import torch

from psr.engine.throughput import RandomSplit, loader_rate, training_rate


def test_training_rate_runs_full_steps_with_amp_and_channels_last(kit):
    model = kit.tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    rate = training_rate(
        model,
        kit.size,
        batch_size=4,
        steps=2,
        device=torch.device("cpu"),
        amp="bf16",
        channels_last=True,
        warmup=1,
    )
    assert rate > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_loader_rate_over_a_random_split():
    split = RandomSplit(16, side=12, channels=1, classes=3)
    assert split.images.shape == (16, 12, 12, 1) and set(split.labels) == {0, 1, 2}
    assert loader_rate(split, 16, batch_size=4, batches=5, workers=0) > 0
