import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from psr.data.synthetic import TRUE_LABEL
from psr.evaluate import (
    EvalResult,
    accuracy_breakdown,
    evaluate,
    load_sidecar,
    match_sidecar,
    resolve_device,
)
from psr.models import create_model

NAMES = ("neutral", "happiness", "surprise")
SIZE = 64


@dataclass
class Split:
    """Stand-in for psr.data.prepared.PreparedSplit with what evaluate reads."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...]
    soft_targets: np.ndarray | None = None


def make_split(n: int = 10, channels: int = 1, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, channels), dtype=np.uint8)
    labels = rng.integers(0, len(NAMES), n)
    return Split(images, labels, [f"fer{i:07d}.png" for i in range(n)], NAMES)


class Brightness(nn.Module):
    """Predicts from mean brightness: a deterministic 2-branch model for exact checks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))  # [B]
        logits = torch.stack([m, -m, torch.zeros_like(m)], dim=1)  # [B, K]
        return torch.stack([logits, -logits], dim=1)  # [B, 2, K]


@pytest.fixture(scope="module")
def tiny_psr() -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "psr", num_classes=3, image_size=SIZE, width=0.125, sr_res_blocks=1, sr_features=8
    )


def test_evaluate_shapes_and_metrics(tiny_psr):
    split = make_split()
    result = evaluate(tiny_psr, split, image_size=SIZE, batch_size=4)
    assert result.probs.shape == (10, 3)
    assert result.branch_probs.shape == (10, 3, 3)
    np.testing.assert_allclose(result.probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.probs, result.branch_probs.mean(1), atol=1e-6)
    assert result.branch_names == ("low", "sr_x2", "full")
    assert result.metrics["accuracy"] == pytest.approx(np.mean(result.preds == split.labels))
    for name in result.branch_names:
        assert 0.0 <= result.metrics[f"branch_accuracy_{name}"] <= 1.0
    assert result.ids[0] == "fer0000000.png" and not result.tta


def test_batch_size_does_not_change_predictions(tiny_psr):
    split = make_split()
    a = evaluate(tiny_psr, split, image_size=SIZE, batch_size=3)
    b = evaluate(tiny_psr, split, image_size=SIZE, batch_size=10)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_branch_accuracy_of_a_known_model():
    split = make_split(n=12, channels=3)
    result = evaluate(Brightness(), split, image_size=32)
    # Branch 0 favours class 0 or 1 by the sign of the mean; branch 1 the opposite.
    b0 = result.branch_probs[:, 0].argmax(1)
    b1 = result.branch_probs[:, 1].argmax(1)
    assert result.metrics["branch_accuracy_b0"] == pytest.approx(np.mean(b0 == split.labels))
    assert result.metrics["branch_accuracy_b1"] == pytest.approx(np.mean(b1 == split.labels))
    assert set(np.unique(b0)) <= {0, 1} and np.all(b0 != b1)


def test_tta_blends_views_reproducibly():
    split = make_split(n=6, channels=3)
    model = Brightness()
    plain = evaluate(model, split, image_size=32)
    tta = evaluate(model, split, image_size=32, tta=True, seed=3)
    again = evaluate(model, split, image_size=32, tta=True, seed=3, batch_size=2)
    other = evaluate(model, split, image_size=32, tta=True, seed=4)
    assert tta.tta
    np.testing.assert_allclose(tta.probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tta.probs, again.probs, atol=1e-6)
    assert not np.allclose(tta.probs, plain.probs, atol=1e-4)
    assert not np.allclose(tta.probs, other.probs, atol=1e-6)
    # 0.4 * plain + 0.6 * mean(views): the plain view keeps at least its 0.4 share.
    assert np.all(tta.probs >= 0.4 * plain.probs - 1e-6)
    # the headline is the official statistic: the mean of each repeat's own accuracy
    m = tta.metrics
    repeats = [m[f"accuracy_repeat_{r}"] for r in (1, 2, 3)]
    assert m["accuracy"] == pytest.approx(np.mean(repeats))
    assert m["accuracy_median"] == pytest.approx(np.median(repeats))
    assert m["pooled_accuracy"] == pytest.approx(np.mean(tta.preds == split.labels))
    once = evaluate(model, split, image_size=32, tta=True, tta_repeats=1, seed=3)
    assert once.metrics["accuracy"] == pytest.approx(once.metrics["pooled_accuracy"])
    assert once.metrics["accuracy_std"] == 0.0
    assert "pooled_accuracy" not in plain.metrics and "accuracy_repeat_1" not in plain.metrics


def test_both_variants_from_one_set_of_passes_with_intervals():
    """``no_tta`` beside ``tta`` is TTA's own first view: the same numbers as evaluating it alone,
    without another pass over the split."""
    from psr.evaluate import evaluate_variants

    split = make_split(n=12, channels=3)
    model = Brightness()
    calls = []
    forward = model.forward
    model.forward = lambda x: calls.append(len(x)) or forward(x)
    both = evaluate_variants(model, split, ("tta", "no_tta"), image_size=32, seed=3)
    passes = len(calls)
    plain = evaluate(model, split, image_size=32, seed=3)
    tta = evaluate(model, split, image_size=32, tta=True, seed=3)
    assert list(both) == ["tta", "no_tta"]
    assert passes == 1 + 3 * 8  # the plain view, then 3 repeats x 8 views: nothing twice
    np.testing.assert_allclose(both["no_tta"].probs, plain.probs)
    np.testing.assert_allclose(both["tta"].probs, tta.probs)
    assert both["no_tta"].metrics == plain.metrics and both["tta"].metrics == tta.metrics
    # each TTA repeat's prediction is kept: its accuracy is the repeat's score
    repeats = both["tta"].repeat_preds
    assert repeats.shape == (3, 12) and plain.repeat_preds is None
    for r, preds in enumerate(repeats, start=1):
        expected = np.mean(preds == split.labels)
        assert both["tta"].metrics[f"accuracy_repeat_{r}"] == pytest.approx(expected)
    for result in both.values():
        m = result.metrics
        assert m["bootstrap_resamples"] == 1000 and m["ci_level"] == 0.95
        for score in ("accuracy", "macro_f1", "uar"):
            assert m[f"{score}_ci_low"] <= m[score] <= m[f"{score}_ci_high"]
    none = evaluate(model, split, image_size=32, bootstrap=0)
    assert "accuracy_ci_low" not in none.metrics
    with pytest.raises(ValueError, match="variants must be some of"):
        evaluate_variants(model, split, ("tta", "flip"), image_size=32)


def test_official_tta_statistics_of_three_repeats():
    from psr.evaluate import official_tta_statistics

    repeats = [
        {"accuracy": 0.80, "macro_f1": 0.70, "uar": 0.60},
        {"accuracy": 0.90, "macro_f1": 0.75, "uar": 0.65},
        {"accuracy": 0.82, "macro_f1": 0.80, "uar": 0.70},
    ]
    pooled = {"accuracy": 0.85, "macro_f1": 0.76, "uar": 0.66}
    stats = official_tta_statistics(pooled, repeats)
    assert stats["accuracy"] == pytest.approx(0.84)
    assert stats["accuracy_std"] == pytest.approx(np.std([0.80, 0.90, 0.82]))
    assert (stats["accuracy_max"], stats["accuracy_median"]) == (0.90, 0.82)
    assert stats["macro_f1"] == pytest.approx(0.75) and stats["uar"] == pytest.approx(0.65)
    assert stats["accuracy_repeat_2"] == 0.90 and stats["pooled_accuracy"] == 0.85


@pytest.mark.slow
def test_tta_on_the_psr_network(tiny_psr):
    split = make_split(n=2)
    tta = evaluate(tiny_psr, split, image_size=SIZE, tta=True, tta_repeats=1)
    assert tta.branch_probs.shape == (2, 3, 3)
    np.testing.assert_allclose(tta.probs, tta.branch_probs.mean(1), atol=1e-6)


def test_class_order_mismatch_is_an_error(tiny_psr):
    with pytest.raises(ValueError, match="differ from the split"):
        evaluate(tiny_psr, make_split(), image_size=SIZE, class_names=("a", "b", "c"))


def test_wrong_number_of_classes_is_an_error():
    split = make_split()
    split.class_names = ("neutral", "happiness")
    split.labels = split.labels % 2
    with pytest.raises(ValueError, match="outputs 3 classes"):
        evaluate(Brightness(), split, image_size=32)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")


def _result_with(correct: np.ndarray) -> EvalResult:
    split = make_split(n=len(correct))
    probs = np.eye(3)[np.where(correct, split.labels, (split.labels + 1) % 3)]
    return EvalResult(
        {}, probs, probs[:, None], split.labels, tuple(split.ids), NAMES, ("b0",), False
    )


def test_breakdown_by_numeric_sidecar_column():
    correct = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 1], bool)
    result = _result_with(correct)
    sidecar = pd.DataFrame(
        {
            "id": [*result.ids, "row00099"],
            "face_size": [10, 12, 14, 16, 18, 30, 32, 34, 36, 38, 99],
        }
    ).sample(frac=1, random_state=0)  # order must not matter
    table = accuracy_breakdown({"no_tta": result}, sidecar, "face_size", bins=2)
    assert table["count"].tolist() == [5, 5]
    assert table["accuracy_no_tta"].tolist() == pytest.approx([2 / 5, 4 / 5])
    assert table["group"].tolist() == ["10-24", "24-38"]


def test_breakdown_scores_the_same_predictions_against_the_rendered_expression():
    """The generator's true_label beside the crowd's label: a group where the crowd said
    something else than the face shows is scored both ways; not_a_face rows are left out."""
    result = _result_with(np.array([1, 1, 0, 0], bool))
    preds = [NAMES[i] for i in result.preds]
    sidecar = pd.DataFrame(
        {
            "id": list(result.ids),
            "size": [10, 10, 40, 40],
            # row 1: the crowd's label is right, the face showed another class; row 2: the
            # crowd missed what the model saw; row 3 is no face
            "true_label": [preds[0], NAMES[(result.preds[1] + 1) % 3], preds[2], "not_a_face"],
        }
    )
    table = accuracy_breakdown({"a": result}, sidecar, "size", bins=2, truth=TRUE_LABEL)
    assert table["accuracy_a"].tolist() == [1.0, 0.0]
    assert table["accuracy_a_vs_true_label"].tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"'true_label' names none of the classes"):
        accuracy_breakdown({"a": result}, sidecar.assign(true_label="x"), "size", truth=TRUE_LABEL)
    with pytest.raises(ValueError, match="no column 'truth'"):
        accuracy_breakdown({"a": result}, sidecar, "size", truth="truth")


def test_breakdown_joins_on_the_id_column_in_any_order():
    result = _result_with(np.array([1, 0, 1, 1], bool))
    ids = list(result.ids)
    # rows listed as ids 3, 2, 1, 0; sizes 10, 20, 30, 40 belong to ids 3, 0, 1, 2
    sidecar = pd.DataFrame({"id": ids[::-1], "index": [0, 0, 1, 1], "size": [10, 40, 30, 20]})
    table = accuracy_breakdown({"a": result}, sidecar, "size", bins=4)
    assert table["accuracy_a"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert table.attrs["matched_by"] == "sidecar column 'id'"


def test_sidecar_ids_are_matched_exactly_not_guessed():
    """A file name or a bare row number is not the prepared id: no silent fuzzy join."""
    ids = ["row00000", "row00001"]
    for spelled in (["row0", "row1"], ["0", "1"], ["row00000.png", "row00001.png"]):
        with pytest.raises(ValueError, match="2 of 2 evaluated samples are not in"):
            match_sidecar(ids, pd.DataFrame({"id": spelled}))
    with pytest.raises(ValueError, match=r"repeats ids, e\.g\. 'row00000'"):
        match_sidecar(ids, pd.DataFrame({"id": ["row00000", "row00000", "row00001"]}))
    rows = match_sidecar(ids, pd.DataFrame({"name": ["row00001", "x", "row00000"]}), key="name")
    assert rows.index.tolist() == [2, 0]


def test_load_sidecar_keeps_ids_as_text(tmp_path):
    path = tmp_path / "side.csv"
    path.write_text("id,size\n007,1\n010,2\n")
    table = load_sidecar(path)
    assert table["id"].tolist() == ["007", "010"] and table["size"].tolist() == [1, 2]
    assert match_sidecar(["010"], table)["size"].tolist() == [2]


def test_breakdown_by_category_and_errors():
    result = _result_with(np.array([1, 0, 1, 1], bool))
    sidecar = pd.DataFrame({"id": list(result.ids), "light": ["dim", "dim", "bright", "bright"]})
    table = accuracy_breakdown({"a": result}, sidecar, "light", key="id")
    assert dict(zip(table["group"], table["accuracy_a"], strict=True)) == {
        "bright": 1.0,
        "dim": 0.5,
    }
    with pytest.raises(ValueError, match="no column 'pose'"):
        accuracy_breakdown({"a": result}, sidecar, "pose")
    with pytest.raises(ValueError, match="not in the sidecar"):
        accuracy_breakdown({"a": result}, sidecar.iloc[:3], "light")
    with pytest.raises(ValueError, match="repeats ids"):
        accuracy_breakdown({"a": result}, sidecar.assign(id="x"), "light")
    with pytest.raises(ValueError, match="no key column 'id'"):
        accuracy_breakdown({"a": result}, sidecar.rename(columns={"id": "name"}), "light")


def write_prepared(root, split: Split) -> None:
    """The prepared format of docs/architecture.md, written directly (one split)."""
    import json

    root.mkdir(parents=True)
    np.save(root / "test.npy", split.images)
    pd.DataFrame(
        {
            "id": split.ids,
            "source": [f"gen:{i}" for i in range(len(split.ids))],
            "label": split.labels,
        }
    ).to_csv(root / "test.csv", index=False)
    manifest = {
        "dataset": "synthetic",
        "protocol": "majority",
        "class_names": list(split.class_names),
        "image_size": list(split.images.shape[1:3]),
        "channels": split.images.shape[3],
        "splits": {"test": {"count": len(split.ids)}},
        "checksums": {},
        "source": "test",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_cli_evaluate_end_to_end(tmp_path, tiny_psr, capsys):
    import json

    from psr.cli import main
    from psr.models import save_model

    split = make_split(n=8)
    write_prepared(tmp_path / "prepared", split)
    ckpt = tmp_path / "best.pt"
    config = tiny_psr.config.model_dump()
    save_model(ckpt, tiny_psr, config=config, class_names=NAMES, image_size=SIZE)
    sidecar = tmp_path / "generation.csv"
    pd.DataFrame({"id": split.ids, "face_size": np.linspace(16, 160, 8)}).to_csv(sidecar)
    out = tmp_path / "reports" / "eval"
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "prepared")]
    args += ["--out", str(out), "--tta-repeats", "1", "--device", "cpu"]  # default: TTA + plain
    args += ["--by-sidecar", str(sidecar), "--bins", "2"]  # default column: face_size
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tta" in printed and "no_tta" in printed and "report.html" in printed
    assert "accuracy by face_size" in printed
    assert re.search(r"accuracy +0\.\d{4} \[0\.\d{4}, [01]\.\d{4}\]", printed)  # with its CI
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "tta" and "accuracy" in metrics["no_tta"]
    assert {"branch_accuracy_low", "branch_accuracy_sr_x2", "branch_accuracy_full"} <= set(metrics)
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 8 and set(predictions["actual"]) <= set(NAMES)
    breakdown = pd.read_csv(out / "accuracy_by_face_size.csv")
    assert breakdown["count"].tolist() == [4, 4]
    for name in ("report.html", "mistakes.png", "accuracy_by_face_size.png", "calibration.csv"):
        assert (out / name).is_file()


def test_cli_evaluate_errors(tmp_path, capsys):
    from psr.cli import main

    args = ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "o"), "--by-column", "x"]) == 2
    assert "--by-column needs --by-sidecar" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_bad_sidecar_fails_before_the_evaluation(tmp_path, tiny_psr, monkeypatch):
    import psr.report
    from psr.models import save_model

    split = make_split(n=8)
    write_prepared(tmp_path / "prepared", split)
    ckpt = tmp_path / "best.pt"
    save_model(
        ckpt, tiny_psr, config=tiny_psr.config.model_dump(), class_names=NAMES, image_size=SIZE
    )

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before checking the sidecar")

    monkeypatch.setattr(psr.report, "evaluate_variants", no_evaluation)
    sidecar = tmp_path / "generation.csv"
    pd.DataFrame({"id": split.ids[:-1], "size": range(7)}).to_csv(sidecar, index=False)
    run = {"sidecar": sidecar, "split": "test", "device": "cpu"}
    with pytest.raises(ValueError, match="1 of 8 evaluated samples are not in"):
        psr.report.report_checkpoint(
            ckpt, tmp_path / "prepared", tmp_path / "o", by_column="size", **run
        )
    with pytest.raises(ValueError, match="has no column 'pose'"):
        psr.report.report_checkpoint(
            ckpt, tmp_path / "prepared", tmp_path / "o", by_column="pose", **run
        )
    assert not (tmp_path / "o").exists()
