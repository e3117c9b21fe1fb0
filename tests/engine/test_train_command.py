import json

import numpy as np
import pandas as pd
import pytest
import torch

from psr.cli import main

CLASSES = ["neutral", "happiness", "surprise"]


def _prepared(root, counts=(("train", 24), ("valid", 9))):
    """A hand-written prepared dataset (docs/architecture.md) with learnable stripes."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in counts:
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, size=(n, 24, 24, 1), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, :, c * 8 : (c + 1) * 8] += 180
        np.save(root / f"{split}.npy", images)
        pd.DataFrame(
            {"id": [f"{split}{i}" for i in range(n)], "source": "synthetic", "label": labels}
        ).to_csv(root / f"{split}.csv", index=False)
    manifest = {
        "dataset": "synthetic",
        "protocol": "test",
        "class_names": CLASSES,
        "image_size": [24, 24],
        "channels": 1,
        "splits": {s: {"count": n} for s, n in counts},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _args(data, out, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        "vgg16",
        "--image-size",
        "32",
        "--model-config",
        str(out.parent / "model.yaml"),
        "--epochs1",
        "1",
        "--epochs2",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--quiet",
        *extra,
    ]


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "model.yaml").write_text("width: 0.0625\n")
    (tmp_path / "train.yaml").write_text("loss:\n  name: pdls\n  alpha: 0.8\n")
    prior = {"class_names": CLASSES[::-1], "matrix": np.eye(3).tolist(), "source": "test"}
    (tmp_path / "priors.json").write_text(json.dumps(prior))
    return _prepared(tmp_path / "data"), tmp_path


def test_train_command_writes_checkpoints_and_resumes(setup, capsys):
    data, tmp = setup
    out = tmp / "run"
    args = _args(
        data, out, "--config", str(tmp / "train.yaml"), "--prior", str(tmp / "priors.json")
    )
    assert main(args) == 0
    assert "best valid_acc" in capsys.readouterr().out
    history = pd.read_csv(out / "history.csv")
    assert history["phase"].tolist() == [1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["best_valid_acc"] <= 1
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["extra"]["channels"] == 1  # gray training data: the Predictor converts to gray
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["config"]["loss"]["name"] == "pdls"
    assert main([*args, "--resume"]) == 0  # finished: nothing left to train


def test_train_command_reports_bad_input(setup, capsys):
    data, tmp = setup
    (tmp / "bad.yaml").write_text("batch_sise: 3\n")
    assert main(_args(data, tmp / "run", "--config", str(tmp / "bad.yaml"))) == 2
    assert "batch_sise" in capsys.readouterr().err
    # pdls without --prior: the loss names what it needs
    assert main(_args(data, tmp / "run", "--config", str(tmp / "train.yaml"))) == 2
    assert "prior" in capsys.readouterr().err


class Payload:  # an arbitrary object: weights_only refuses to unpickle it
    pass


def test_resume_from_a_pickled_checkpoint_is_one_line(setup, capsys):
    data, tmp = setup
    out = tmp / "run"
    out.mkdir()
    torch.save({"format": "psr-train-state/1", "obj": Payload()}, out / "last.pt")
    assert main([*_args(data, out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "last.pt" in x]
    assert "is not a loadable training checkpoint" in line
