import base64
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from psr.evaluate import EvalResult, accuracy_breakdown, official_tta_statistics
from psr.metrics import classification_metrics
from psr.report import metrics_document, write_report

NAMES = ("neutral", "happiness", "surprise", "sadness")


def make_result(seed: int, n: int = 40, tta: bool = False) -> EvalResult:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(NAMES), n)
    logits = rng.normal(size=(n, 2, len(NAMES))) + 1.2 * np.eye(len(NAMES))[labels][:, None]
    branch = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # [N, 2, K]
    probs = branch.mean(1)
    names = ("low", "full")
    metrics = classification_metrics(labels, probs, NAMES, branch, names)
    if tta:  # three repeats, each its own (noisier) blend
        noisy = [probs + rng.uniform(0, 0.3, probs.shape) for _ in range(3)]
        repeats = [
            classification_metrics(labels, p / p.sum(1, keepdims=True), NAMES) for p in noisy
        ]
        metrics |= official_tta_statistics(metrics, repeats)
    ids = tuple(f"fer{i:07d}.png" for i in range(n))
    return EvalResult(metrics, probs, branch, labels, ids, NAMES, names, tta)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    results = {"tta": make_result(0, tta=True), "no_tta": make_result(1)}
    images = np.random.default_rng(0).integers(0, 256, (40, 48, 48, 1), dtype=np.uint8)
    sidecar = pd.DataFrame({"id": results["tta"].ids, "face_size": np.arange(40) + 8})
    breakdown = accuracy_breakdown(results, sidecar, "face_size", bins=4)
    write_report(
        out,
        results,
        images=images,
        breakdown=breakdown,
        breakdown_column="face_size",
        info={"checkpoint": "best.pt"},
    )
    return out, results


PNGS = (
    "confusion_counts.png",
    "confusion_normalized.png",
    "reliability.png",
    "per_class.png",
    "branches.png",
    "mistakes.png",
    "accuracy_by_face_size.png",
)


def test_png_figures_decode(report_dir):
    out, _ = report_dir
    for name in PNGS:
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50, name
        assert image.std() > 1, f"{name} is blank"


def test_metrics_json_is_flat_for_dvc(report_dir):
    out, results = report_dir
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["variant"] == "tta"
    for key in ("accuracy", "macro_f1", "uar", "nll", "ece", "f1_neutral", "branch_accuracy_low"):
        assert doc[key] == pytest.approx(results["tta"].metrics[key])
    assert doc["no_tta"]["accuracy"] == pytest.approx(results["no_tta"].metrics["accuracy"])
    assert all(not isinstance(v, dict) for k, v in doc.items() if k != "no_tta")


def test_predictions_csv_has_names_and_probabilities(report_dir):
    out, results = report_dir
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["id", "actual", "predicted", *(f"p_{n}" for n in NAMES)]
    result = results["tta"]
    assert table["id"].tolist() == list(result.ids)
    assert table["actual"].tolist() == [NAMES[i] for i in result.labels]
    assert table["predicted"].tolist() == [NAMES[i] for i in result.preds]
    np.testing.assert_allclose(table[[f"p_{n}" for n in NAMES]].to_numpy(), result.probs, atol=1e-6)


def test_calibration_csv_matches_ece(report_dir):
    out, results = report_dir
    table = pd.read_csv(out / "calibration.csv")
    assert table["count"].sum() == 40
    weights = table["count"] / table["count"].sum()
    ece = float((weights * (table["accuracy"] - table["confidence"]).abs()).sum())
    assert ece == pytest.approx(results["tta"].metrics["ece"])


def test_breakdown_csv(report_dir):
    out, _ = report_dir
    table = pd.read_csv(out / "accuracy_by_face_size.csv")
    assert list(table.columns) == ["group", "count", "accuracy_tta", "accuracy_no_tta"]
    assert table["count"].sum() == 40


def test_html_is_self_contained(report_dir):
    out, results = report_dir
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(PNGS)
    for data in images:
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from elsewhere
    assert f"{results['tta'].metrics['accuracy']:.4f}" in page
    assert f"{results['no_tta'].metrics['accuracy']:.4f}" in page
    assert "<td>low</td>" in page and "<td>fused</td>" in page
    tta = results["tta"].metrics
    assert "TTA repeats" in page and f"<td>{tta['accuracy_repeat_3']:.4f}</td>" in page
    assert f"<td>fused</td><td>{tta['pooled_accuracy']:.4f}</td>" in page  # the branches' blend
    assert "face_size" in page and "best.pt" in page


def test_rewrite_replaces_the_directory(tmp_path):
    out = tmp_path / "r"
    write_report(out, {"no_tta": make_result(2)})
    (out / "stale.txt").write_text("old")
    write_report(out, {"no_tta": make_result(3)})
    assert not (out / "stale.txt").exists()
    assert not (out / "mistakes.png").exists()  # no images given
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary leftovers


def test_failed_write_leaves_the_old_report(tmp_path):
    out = tmp_path / "r"
    write_report(out, {"no_tta": make_result(2)})
    before = (out / "metrics.json").read_text()
    with pytest.raises(ValueError, match="3 images for 40"):
        write_report(out, {"no_tta": make_result(3)}, images=np.zeros((3, 8, 8, 1), np.uint8))
    assert (out / "metrics.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_report_never_replaces_a_folder_that_is_not_a_report(tmp_path):
    """``psr evaluate --out .`` (a typo) must not wipe the project."""
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace it"):
        write_report(tmp_path, {"no_tta": make_result(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_metrics_document_single_variant():
    doc = metrics_document({"no_tta": make_result(4)})
    assert doc["variant"] == "no_tta" and "tta" not in doc
