"""Where forgotten samples go: confusion matrix against scikit-learn, shares and accuracy drops by hand, PNGs."""

from collections import Counter

import numpy as np
import pytest
from matplotlib.image import imread
from metric_helpers import assert_json_ready, random_probs
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from fastforget.metrics import confusion_matrix, reassignment
from fastforget.metrics.plots import plot_confusion_matrices, plot_reassignment

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
def test_confusion_matrix_matches_sklearn(rng):
    labels, predictions = rng.integers(0, 13, 300), rng.integers(0, 13, 300)
    expected = sklearn_confusion_matrix(labels, predictions, labels=range(13))
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 13), expected)


def test_reassignment_shares_and_accuracy_drop_match_a_hand_count(rng):
    num_classes, forget = 6, [1, 3]
    labels = rng.integers(0, num_classes, 250)
    probs, probs_original = random_probs(rng, 250, num_classes), random_probs(rng, 250, num_classes)
    result = reassignment(probs, labels, forget, probs_original=probs_original)
    predictions, original = probs.argmax(1), probs_original.argmax(1)

    assert [entry.forget_class for entry in result.reassigned] == forget
    for entry in result.reassigned:
        counts = Counter(int(p) for p, y in zip(predictions, labels, strict=True) if y == entry.forget_class)
        assert entry.n_samples == sum(counts.values())
        assert {s.class_index: s.share for s in entry.shares} == pytest.approx(
            {c: k / entry.n_samples for c, k in counts.items()})
        assert sum(s.share for s in entry.shares) == pytest.approx(1.0)
        assert [s.share for s in entry.shares] == sorted((s.share for s in entry.shares), reverse=True)

    def class_accuracy(preds, c):
        return 100 * np.mean(preds[labels == c] == c)

    drops = {c: class_accuracy(original, c) - class_accuracy(predictions, c)
             for c in range(num_classes) if c not in forget}
    assert {d.class_index: d.drop for d in result.accuracy_drop} == pytest.approx(drops)
    assert [d.drop for d in result.accuracy_drop] == pytest.approx(sorted(drops.values(), reverse=True))
    assert np.array(result.confusion).sum() == 250
    assert_json_ready(result)


@pytest.mark.parametrize("num_classes, names", [(7, [f"class {i}" for i in range(7)]), (30, None)])
def test_plots_write_readable_pngs(rng, tmp_path, num_classes, names):
    labels = rng.integers(0, num_classes, 400)
    models = {title: random_probs(rng, 400, num_classes) for title in ("original", "unlearned", "retrained")}
    matrices = {title: confusion_matrix(labels, probs.argmax(1), num_classes) for title, probs in models.items()}
    paths = [
        plot_confusion_matrices(matrices, tmp_path / "all.png", class_names=names),
        plot_confusion_matrices({"unlearned": matrices["unlearned"]}, tmp_path / "one.png", class_names=names),
        plot_reassignment(reassignment(models["unlearned"], labels, [2]).reassigned[0], tmp_path / "bars.png",
                          class_names=names, top=5),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.png", "bars.png", "one.png"]  # no temp files left


def test_confusion_plot_rejects_mismatched_matrices(tmp_path):
    with pytest.raises(ValueError, match="every matrix"):
        plot_confusion_matrices({"a": np.eye(3), "b": np.eye(4)}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
