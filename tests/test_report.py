import base64
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from psr.evaluate import EvalResult, accuracy_breakdown, interval_metrics, official_tta_statistics
from psr.metrics import chance_baseline, classification_metrics, majority_baseline
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
    preds, repeat_preds = probs.argmax(1), None
    if tta:  # three repeats, each its own (noisier) blend
        noisy = [probs + rng.uniform(0, 0.3, probs.shape) for _ in range(3)]
        repeats = [
            classification_metrics(labels, p / p.sum(1, keepdims=True), NAMES) for p in noisy
        ]
        metrics |= official_tta_statistics(metrics, repeats)
        preds = repeat_preds = np.stack([p.argmax(1) for p in noisy])
    metrics |= interval_metrics(labels, preds, len(NAMES), 300, seed)
    ids = tuple(f"fer{i:07d}.png" for i in range(n))
    return EvalResult(metrics, probs, branch, labels, ids, NAMES, names, tta, repeat_preds)


PROVENANCE = {
    "registered model": "psr-fer version 7",
    "run id": "0123456789abcdef",
    "training configuration": "train.phase1.epochs=15, train.loss.name=pdls",
}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    results = {"tta": make_result(0, tta=True), "no_tta": make_result(1)}
    images = np.random.default_rng(0).integers(0, 256, (40, 48, 48, 1), dtype=np.uint8)
    sidecar = pd.DataFrame({"id": results["tta"].ids, "face_size": np.arange(40) + 8})
    breakdown = accuracy_breakdown(results, sidecar, "face_size", bins=4)
    labels = results["tta"].labels
    baselines = {
        "majority": majority_baseline(np.r_[labels, [1] * 30], labels, NAMES),
        "chance": chance_baseline(labels, NAMES),
    }
    write_report(
        out,
        results,
        images=images,
        breakdown=breakdown,
        breakdown_column="face_size",
        info={"checkpoint": "best.pt"},
        provenance=PROVENANCE,
        baselines=baselines,
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
    nested = {"no_tta", "majority_baseline", "chance_baseline"}
    assert all(not isinstance(v, dict) for k, v in doc.items() if k not in nested)
    for score in ("accuracy", "macro_f1", "uar"):  # the 95 % bootstrap interval of each
        assert doc[f"{score}_ci_low"] <= doc[score] <= doc[f"{score}_ci_high"]
        assert doc[f"{score}_ci_low"] < doc[f"{score}_ci_high"]
    assert doc["ci_level"] == 0.95 and doc["bootstrap_resamples"] == 300
    assert doc["chance_baseline"]["accuracy"] == 1 / len(NAMES)
    assert doc["majority_baseline"]["class"] == "happiness"


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


def _section(page: str, heading: str) -> str:
    """The HTML from ``<h2>heading</h2>`` to the next heading."""
    found = re.search(rf"<h2>{re.escape(heading)}</h2>(.*?)(?=<h2>|$)", page, re.S)
    assert found, f"no section {heading!r}"
    return found.group(1)


def test_html_has_provenance_tta_vs_plain_baselines_and_the_breakdown(report_dir):
    out, results = report_dir
    page = (out / "report.html").read_text()
    provenance = _section(page, "Provenance")
    for label, value in PROVENANCE.items():
        assert f"<td>{label}</td><td>{value}</td>" in provenance
    table = _section(page, "TTA vs plain")
    assert "percentile bootstrap, 300 resamples" in table and "each TTA repeat" in table
    tta, plain = results["tta"].metrics, results["no_tta"].metrics
    row = (
        f"<td>accuracy</td><td>{tta['accuracy']:.4f}</td>"
        f"<td>[{tta['accuracy_ci_low']:.4f}, {tta['accuracy_ci_high']:.4f}]</td>"
        f"<td>{plain['accuracy']:.4f}</td>"
        f"<td>[{plain['accuracy_ci_low']:.4f}, {plain['accuracy_ci_high']:.4f}]</td>"
        f"<td>{tta['accuracy'] - plain['accuracy']:+.4f}</td>"
    )
    assert row in table
    baselines = _section(page, "Baselines")
    assert f"<td>model (tta)</td><td>{tta['accuracy']:.4f} [" in baselines
    assert "always &#x27;happiness&#x27;" in baselines
    labels = results["tta"].labels
    assert f"<td>{np.mean(labels == 1):.4f}</td>" in baselines  # always "happiness"
    assert "uniform guess among 4 classes</td><td>0.2500</td>" in baselines
    breakdown = _section(page, "Accuracy by face_size")
    assert breakdown.count("<tr>") == 1 + 4  # header + 4 bins


def test_branch_chart_legend_covers_no_bar_and_no_value(report_dir):
    """The legend used to sit on the fused bars ("lower right"): every bar and value label's
    box must now be clear of it."""
    import matplotlib.pyplot as plt

    from psr.figures import branches_figure

    _, results = report_dir
    fig = branches_figure(results)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    covered = [
        a for a in (*ax.patches, *ax.texts) if legend.overlaps(a.get_window_extent(renderer))
    ]
    assert len(ax.texts) == 2 * 3 and not covered  # 2 variants x (2 branches + fused)
    plt.close(fig)


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
