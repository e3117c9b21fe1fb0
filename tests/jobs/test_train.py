import json

import numpy as np
import pandas as pd
import pytest
import torch

from psr.jobs import train


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_train_job_writes_checkpoints_history_and_metrics(
    prepared, prior_file, tmp_path, tiny_model, tiny_train
):
    epochs = []
    result = train.run(
        tiny_model(),
        tiny_train(),
        prepared,
        tmp_path / "run",
        prior=prior_file,
        reports=tmp_path / "reports",
        callbacks=[lambda epoch, metrics: epochs.append(epoch)],
    )
    assert epochs == [1, 2]  # epoch numbers, 1-based
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    history = pd.read_csv(tmp_path / "reports" / "history.csv")
    assert history["phase"].tolist() == [1, 2] and history["epoch"].tolist() == [1, 2]
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics == result.metrics and metrics["epochs"] == 2
    # best_epoch names a row of history.csv by its epoch number
    best = history.set_index("epoch").loc[metrics["best_epoch"]]
    assert best["valid_acc"] == pytest.approx(metrics["best_valid_acc"])
    # the class count and names come from the prepared manifest
    assert result.model.num_classes == 8
    assert (
        result.model.class_names
        == json.loads((prepared / "manifest.json").read_text())["class_names"]
    )


def test_seed_decides_the_initial_weights(prepared, prior_file, tmp_path, tiny_model, tiny_train):
    """Same config twice -> byte-identical best.pt tensors, whatever ran before; another
    train.seed -> other weights."""
    cfg = tiny_train(phase2={"epochs": 0, "optimizer": "sgd"})
    torch.manual_seed(99)
    a = train.run(tiny_model(), cfg, prepared, tmp_path / "a", prior=prior_file)
    torch.rand(3)
    np.random.rand(3)
    b = train.run(tiny_model(), cfg, prepared, tmp_path / "b", prior=prior_file)
    c = train.run(
        tiny_model(), cfg.model_copy(update={"seed": 1}), prepared, tmp_path / "c", prior=prior_file
    )
    wa, wb, wc = (_weights(r.fit.best_checkpoint) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


def test_resume_continues_and_ends_identical(
    prepared, prior_file, tmp_path, tiny_model, tiny_train
):
    straight = train.run(tiny_model(), tiny_train(), prepared, tmp_path / "a", prior=prior_file)
    one = tiny_train(phase2={"epochs": 1, "optimizer": "sgd", "lrs": [1e-3, 5e-3, 5e-3]})

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train.run(
            tiny_model(),
            one,
            prepared,
            tmp_path / "b",
            prior=prior_file,
            callbacks=[stop_after_first],
        )
    resumed = train.run(tiny_model(), one, prepared, tmp_path / "b", prior=prior_file, resume=True)
    assert len(resumed.fit.history) == 2
    wa, wb = _weights(straight.fit.best_checkpoint), _weights(resumed.fit.best_checkpoint)
    assert straight.fit.best_epoch == resumed.fit.best_epoch
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    history = pd.read_csv(tmp_path / "b" / "history.csv")
    assert history["epoch"].tolist() == [1, 2]  # the whole run, also after the resume


def test_class_count_contradiction_is_an_error(
    prepared, prior_file, tmp_path, tiny_model, tiny_train
):
    with pytest.raises(ValueError, match=r"num_classes is 7 but the prepared dataset has 8"):
        train.run(tiny_model(num_classes=7), tiny_train(), prepared, tmp_path, prior=prior_file)
    with pytest.raises(ValueError, match="class_names"):
        train.model_for_dataset(tiny_model(class_names=list("abcdefgh")), list("abcdefgi"))


def test_prior_in_another_order_is_reindexed(prepared, tmp_path, tiny_model, tiny_train):
    from psr.priors import load_priors, save_priors

    names = json.loads((prepared / "manifest.json").read_text())["class_names"]
    k = len(names)
    matrix = np.full((k, k), 0.5 / (k - 1)) + np.eye(k) * (0.5 - 0.5 / (k - 1))
    save_priors(tmp_path / "rev.json", names[::-1], matrix, "test")
    assert load_priors(tmp_path / "rev.json")[0] == tuple(names[::-1])
    cfg = tiny_train(phase2={"epochs": 0, "optimizer": "sgd"})
    result = train.run(tiny_model(), cfg, prepared, tmp_path / "run", prior=tmp_path / "rev.json")
    assert result.metrics["epochs"] == 1
