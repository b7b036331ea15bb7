"""Where forgotten samples go, and what unlearning cost the other classes (the paper's A.6, Table 6, Fig. 3-4).

A retrained model sends a forgotten class to similar classes (automobile -> truck); an unlearned model that
matches it is faithful. Everything here uses only each row's argmax, so logits work as well as probabilities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fastforget.metrics._common import ArrayLike, MetricResult, as_forget, as_labels, as_outputs
from fastforget.metrics.accuracy import per_class_accuracy
from fastforget.metrics.registry import EvalContext, register


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts [K, K] int64: row = true class, column = predicted class."""
    labels = as_labels(labels, "labels", length=len(labels), num_classes=num_classes)
    predictions = as_labels(predictions, "predictions", length=len(labels), num_classes=num_classes)
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class ClassShare(MetricResult):
    class_index: int
    share: float  # fraction of the forgotten class's samples predicted as this class


@dataclass
class Reassigned(MetricResult):
    """Where the samples of one forgotten class are predicted, every class that receives any, largest first."""

    forget_class: int
    n_samples: int
    shares: list[ClassShare]  # sums to 1 (forget classes included, if some samples still land there)


@dataclass
class AccuracyDrop(MetricResult):
    class_index: int
    original: float  # percent
    unlearned: float
    drop: float  # original - unlearned


@dataclass
class ReassignmentResult(MetricResult):
    confusion: list[list[int]]  # [K][K], rows = true class
    reassigned: list[Reassigned]  # one entry per forget class that has samples
    accuracy_drop: list[AccuracyDrop] | None  # retained classes, largest drop first; None without the original


def reassignment(probs: ArrayLike, labels: ArrayLike, forget: int | Iterable[int], *,
                 probs_original: ArrayLike | None = None) -> ReassignmentResult:
    """Confusion matrix, reassignment shares of each forget class and, given the original model's outputs on the
    same samples, the per-class accuracy drop of the retained classes (Table 6)."""
    outputs = as_outputs(probs, "probs", probabilities=False)
    num_classes = outputs.shape[1]
    labels = as_labels(labels, "labels", length=len(outputs), num_classes=num_classes)
    forget = as_forget(forget, num_classes)
    predictions = outputs.argmax(1)
    confusion = confusion_matrix(labels, predictions, num_classes)

    reassigned = []
    for forget_class in forget:
        row = confusion[forget_class]
        if row.sum():
            order = np.argsort(-row, kind="stable")
            shares = [ClassShare(int(c), float(row[c] / row.sum())) for c in order if row[c]]
            reassigned.append(Reassigned(int(forget_class), int(row.sum()), shares))

    accuracy_drop = None
    if probs_original is not None:
        original = as_outputs(probs_original, "probs_original", probabilities=False)
        if original.shape != outputs.shape:
            raise ValueError(f"probs_original {original.shape} must match probs {outputs.shape}: outputs of the "
                             "original model on the same samples")
        before = per_class_accuracy(original.argmax(1), labels, num_classes)
        after = per_class_accuracy(predictions, labels, num_classes)
        accuracy_drop = sorted(
            (AccuracyDrop(c, before[c], after[c], before[c] - after[c])
             for c in range(num_classes) if c not in forget and before[c] is not None),
            key=lambda entry: -entry.drop)
    return ReassignmentResult(confusion.tolist(), reassigned, accuracy_drop)


def _notes(results: dict, classes: list[str]) -> list[tuple[str, str]]:
    rows = []
    for moved in results["reassignment"]["reassigned"]:
        top = ", ".join(f"{classes[s['class_index']]} {100 * s['share']:.0f}%" for s in moved["shares"][:3])
        rows.append((f"{classes[moved['forget_class']]} goes to", top))
    return rows


@register("reassignment", summary="where the forgotten classes' test samples go, and what each retained class lost",
          notes=_notes)
def compute_reassignment(ctx: EvalContext) -> dict:
    result = reassignment(ctx.target.test_probs, ctx.dataset.test_labels, ctx.forget,
                          probs_original=ctx.original.test_probs if ctx.original is not None else None).as_dict()
    return {"reassignment": {"reassigned": result["reassigned"], "accuracy_drop": result["accuracy_drop"]},
            "confusion_test": result["confusion"]}
