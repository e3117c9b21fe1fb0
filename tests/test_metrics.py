import numpy as np
import pytest

from psr import metrics
from psr.metrics import classification_metrics

# 6 samples, 3 classes. Predictions (argmax): 0, 0, 1, 2, 1, 0; labels: 0, 1, 1, 2, 2, 0.
LABELS = np.array([0, 1, 1, 2, 2, 0])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.5, 0.4, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.3, 0.4, 0.3],
        [0.9, 0.05, 0.05],
    ]
)
NAMES = ("neutral", "happiness", "surprise")


def test_confusion_matrix_rows_are_true_classes():
    cm = metrics.confusion_matrix(LABELS, PROBS.argmax(1), 3)
    np.testing.assert_array_equal(cm, [[2, 0, 0], [1, 1, 0], [0, 1, 1]])


def test_hand_computed_values():
    out = metrics.classification_metrics(LABELS, PROBS, NAMES)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # precision: 2/3, 1/2, 1/1; recall: 2/2, 1/2, 1/2
    assert out["precision_neutral"] == pytest.approx(2 / 3)
    assert out["precision_happiness"] == pytest.approx(0.5)
    assert out["recall_surprise"] == pytest.approx(0.5)
    f1 = [2 * (2 / 3) / (2 / 3 + 1), 0.5, 2 * 0.5 / 1.5]
    assert out["macro_f1"] == pytest.approx(np.mean(f1))
    assert out["uar"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    nll = -np.mean(np.log([0.7, 0.4, 0.8, 0.6, 0.3, 0.9]))
    assert out["nll"] == pytest.approx(nll)
    assert out["support_neutral"] == 2
    assert out["num_samples"] == 6


def test_ece_hand_computed():
    # Confidences 0.7, 0.5, 0.8, 0.6, 0.4, 0.9 each fall in a different bin of width 1/15, so
    # ECE = mean |correct - confidence|.
    correct = np.array([1, 0, 1, 1, 0, 1])
    conf = np.array([0.7, 0.5, 0.8, 0.6, 0.4, 0.9])
    expected = np.mean(np.abs(correct - conf))
    assert metrics.expected_calibration_error(LABELS, PROBS) == pytest.approx(expected)


def test_ece_pools_samples_in_one_bin():
    labels = np.array([0, 1])
    probs = np.array([[0.95, 0.05], [0.96, 0.04]])  # both in (14/15, 1]; accuracy 0.5
    bins = metrics.calibration_bins(labels, probs)
    assert bins.count[-1] == 2 and bins.count[:-1].sum() == 0
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(abs(0.5 - 0.955))


def test_bin_edges_are_right_closed():
    labels = np.array([0])
    probs = np.array([[2 / 3, 1 / 3]])  # 2/3 = 10/15 is the upper edge of bin 9
    assert metrics.calibration_bins(labels, probs).count[9] == 1


def test_perfect_calibration_has_zero_ece():
    labels = np.array([0, 0, 0, 1])
    probs = np.tile([0.75, 0.25], (4, 1))
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.0)


def test_branch_accuracies():
    branch = np.stack([PROBS, np.roll(PROBS, 1, axis=1)], axis=1)  # [6, 2, 3]
    accs = metrics.branch_accuracies(LABELS, branch)
    assert accs[0] == pytest.approx(4 / 6)
    assert accs[1] == pytest.approx(np.mean(((PROBS.argmax(1) + 1) % 3) == LABELS))
    out = metrics.classification_metrics(LABELS, PROBS, NAMES, branch, ["low", "full"])
    assert out["branch_accuracy_low"] == pytest.approx(4 / 6)


def test_class_never_predicted_nor_present_is_left_out_of_macro_averages():
    labels = np.array([0, 1, 0])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    out = metrics.classification_metrics(labels, probs, NAMES)
    assert out["f1_surprise"] == 0.0
    assert out["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        (np.array([0, 3]), np.full((2, 3), 1 / 3), "out of range"),
        (np.array([0]), np.full((2, 3), 1 / 3), "does not match"),
        (np.array([0.0, 1.0]), np.full((2, 3), 1 / 3), "integers"),
        (np.array([], dtype=int), np.zeros((0, 3)), "no samples"),
    ],
)
def test_bad_input_is_rejected(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        metrics.classification_metrics(labels, probs, NAMES)


def test_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    k, n = 8, 500
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    preds = probs.argmax(1)
    names = [f"c{i}" for i in range(k)]
    out = metrics.classification_metrics(labels, probs, names)
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(labels, preds))
    assert out["macro_f1"] == pytest.approx(sk.f1_score(labels, preds, average="macro"))
    assert out["uar"] == pytest.approx(sk.balanced_accuracy_score(labels, preds))
    assert out["nll"] == pytest.approx(sk.log_loss(labels, probs, labels=range(k)))
    np.testing.assert_array_equal(
        metrics.confusion_matrix(labels, preds, k), sk.confusion_matrix(labels, preds)
    )
    p, r, f, s = sk.precision_recall_fscore_support(labels, preds, labels=range(k))
    ours = metrics.per_class_scores(metrics.confusion_matrix(labels, preds, k))
    np.testing.assert_allclose(ours.precision, p)
    np.testing.assert_allclose(ours.recall, r)
    np.testing.assert_allclose(ours.f1, f)
    np.testing.assert_array_equal(ours.support, s)


def test_ece_agrees_with_a_direct_loop():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=300)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    ece = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(ece)


def test_branch_probabilities_must_have_the_same_classes_and_samples():
    labels = np.array([0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    three = np.full((2, 3, 3), 1 / 3)  # 3 classes per branch, 2 fused
    with pytest.raises(ValueError, match="3 classes per branch but 2"):
        metrics.classification_metrics(labels, probs, ["a", "b"], three)


def test_confusion_matrix_rejects_out_of_range_predictions():
    with pytest.raises(ValueError, match=r"predictions outside 0\.\.1"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)


def test_calibration_needs_at_least_one_bin():
    with pytest.raises(ValueError, match="n_bins"):
        metrics.calibration_bins(np.array([0]), np.array([[1.0, 0.0]]), n_bins=0)


def test_majority_baseline_answers_the_most_frequent_training_class():
    from psr.metrics import majority_baseline

    names = ("a", "b", "c")
    baseline = majority_baseline(np.array([1, 1, 0, 2, 1]), np.array([0, 1, 1, 2]), names)
    assert baseline["class"] == "b"
    assert baseline["accuracy"] == pytest.approx(0.5)
    assert baseline["uar"] == pytest.approx(1 / 3)  # recall 1 for b, 0 for a and c
    assert baseline["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 3)


def _reference_bootstrap(labels, preds, k, resamples, seed):
    """The same draws as bootstrap_intervals, scored one by one with classification_metrics."""
    from psr.metrics import BASELINE_METRICS

    draws = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    names = [str(i) for i in range(k)]
    scores = {m: [] for m in BASELINE_METRICS}
    for draw in draws:
        per_repeat = [
            classification_metrics(labels[draw], np.eye(k)[p[draw]], names) for p in preds
        ]
        for m in scores:
            scores[m].append(np.mean([r[m] for r in per_repeat]))
    return {m: tuple(np.percentile(v, [2.5, 97.5])) for m, v in scores.items()}


@pytest.mark.parametrize("repeats", [1, 3])
def test_bootstrap_intervals_equal_scoring_each_draw(repeats):
    """The vectorised bootstrap is the loop over draws it replaces; with TTA repeats each draw
    scores every repeat on the same images and averages them, as the headline does."""
    from psr.metrics import bootstrap_intervals

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 60)
    labels[:3] = 3  # a rare class, absent from some draws: macro-F1 and UAR skip it there
    labels[3:] = np.where(labels[3:] == 3, 0, labels[3:])
    preds = np.stack([np.where(rng.random(60) < 0.6, labels, rng.integers(0, 4, 60))] * repeats)
    preds[1:] = np.where(rng.random(preds[1:].shape) < 0.2, 2, preds[1:])  # repeats differ
    got = bootstrap_intervals(labels, preds if repeats > 1 else preds[0], 4, resamples=200, seed=5)
    expected = _reference_bootstrap(labels, preds, 4, 200, 5)
    for metric, (low, high) in expected.items():
        assert got[metric] == pytest.approx((low, high), abs=1e-12), metric


def test_bootstrap_intervals_cover_the_estimate_and_narrow_with_more_images():
    from psr.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 3200):
        labels = rng.integers(0, 8, n)
        preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 8, n))
        low, high = bootstrap_intervals(labels, preds, 8, seed=0)["accuracy"]
        assert low < np.mean(preds == labels) < high
        widths.append(high - low)
        again = bootstrap_intervals(labels, preds, 8, seed=0)["accuracy"]
        assert again == (low, high)  # seeded
    # the interval's width falls like 1 / sqrt(N): 16x the images, about a quarter as wide
    assert widths[1] == pytest.approx(widths[0] / 4, rel=0.25)
    with pytest.raises(ValueError, match="predictions of shape"):
        bootstrap_intervals(labels, preds[:-1], 8)


def test_chance_baseline_is_what_uniform_guessing_scores():
    from psr.metrics import chance_baseline

    rng = np.random.default_rng(0)
    names = [str(i) for i in range(5)]
    labels = rng.choice(5, size=200_000, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    guessed = classification_metrics(labels, np.eye(5)[rng.integers(0, 5, len(labels))], names)
    chance = chance_baseline(labels, names)
    assert chance["accuracy"] == chance["uar"] == 0.2
    for metric in ("accuracy", "macro_f1", "uar"):
        assert chance[metric] == pytest.approx(guessed[metric], abs=3e-3), metric
