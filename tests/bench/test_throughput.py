import torch
from throughput import RandomSplit, loader_rate, training_rate
from torch import nn

SIZE = 16


class TinyPyramid(nn.Module):
    """Branch logits ``[B, 2, K]`` and the three parameter groups training_rate's AdamW needs."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.stn = nn.Conv2d(3, 3, kernel_size=1)
        self.low = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn(x)
        return torch.stack([self.head(self.low(x)), self.head(self.low(x.flip(-1)))], dim=1)

    def param_groups(self) -> list[list[nn.Parameter]]:
        return [
            list(self.stn.parameters()),
            list(self.head.parameters()),
            list(self.low.parameters()),
        ]


def test_training_rate_runs_full_steps_with_amp_and_channels_last():
    torch.manual_seed(0)
    model = TinyPyramid()
    before = [p.detach().clone() for p in model.parameters()]
    rate = training_rate(
        model,
        SIZE,
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
