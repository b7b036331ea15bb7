"""ACC_r and ACC_f: how much of the retained classes a model still knows, and how much of the forgotten ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fastforget.metrics._common import ArrayLike, MetricResult, as_forget, as_labels, as_outputs


@dataclass
class AccuracyResult(MetricResult):
    """Percentages on one split; None where the split holds no sample of that kind."""

    acc_r: float | None
    acc_f: float | None
    per_class: list[float | None]
    n_r: int
    n_f: int


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy of each class in percent (None for a class without samples), from integer predictions."""
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predictions == labels], minlength=num_classes)
    return [100.0 * int(h) / int(t) if t else None for h, t in zip(hits, totals, strict=True)]


def accuracy(probs: ArrayLike, labels: ArrayLike, forget: int | Iterable[int]) -> AccuracyResult:
    """ACC_r (samples whose label is retained) and ACC_f (label in `forget`) on one split, in percent.

    Only the argmax of each row is used, so logits work as well as probabilities.
    """
    outputs = as_outputs(probs, "probs", probabilities=False)
    num_classes = outputs.shape[1]
    labels = as_labels(labels, "labels", length=len(outputs), num_classes=num_classes)
    is_forget = np.isin(labels, as_forget(forget, num_classes))
    predictions = outputs.argmax(1)
    correct = predictions == labels

    def percent_correct(mask: np.ndarray) -> float | None:
        return 100.0 * float(correct[mask].mean()) if mask.any() else None

    return AccuracyResult(
        acc_r=percent_correct(~is_forget),
        acc_f=percent_correct(is_forget),
        per_class=per_class_accuracy(predictions, labels, num_classes),
        n_r=int((~is_forget).sum()),
        n_f=int(is_forget.sum()),
    )
