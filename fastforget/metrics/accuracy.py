"""ACC_r and ACC_f: how much of the retained classes a model still knows, and how much of the forgotten ones.

Each with a bootstrap interval over the samples of its split (exact: a sample is right or wrong).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fastforget.metrics._common import ArrayLike, MetricResult, as_forget, as_labels, as_outputs
from fastforget.metrics.intervals import Interval, bootstrap_mean
from fastforget.metrics.registry import Column, EvalContext, register


@dataclass
class AccuracyResult(MetricResult):
    """Percentages on one split; None where the split holds no sample of that kind."""

    acc_r: float | None
    acc_f: float | None
    acc_r_ci: Interval | None
    acc_f_ci: Interval | None
    per_class: list[float | None]
    n_r: int
    n_f: int


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy of each class in percent (None for a class without samples), from integer predictions."""
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predictions == labels], minlength=num_classes)
    return [100.0 * int(h) / int(t) if t else None for h, t in zip(hits, totals, strict=True)]


def accuracy(probs: ArrayLike, labels: ArrayLike, forget: int | Iterable[int], *, seed: int = 0) -> AccuracyResult:
    """ACC_r (samples whose label is retained) and ACC_f (label in `forget`) on one split, in percent, with
    bootstrap intervals seeded by `seed`.

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

    def interval(mask: np.ndarray) -> Interval | None:
        bounds = bootstrap_mean(correct[mask], seed=seed)
        return None if bounds is None else [100.0 * bound for bound in bounds]

    return AccuracyResult(
        acc_r=percent_correct(~is_forget),
        acc_f=percent_correct(is_forget),
        acc_r_ci=interval(~is_forget),
        acc_f_ci=interval(is_forget),
        per_class=per_class_accuracy(predictions, labels, num_classes),
        n_r=int((~is_forget).sum()),
        n_f=int(is_forget.sum()),
    )


@register("accuracy", summary="ACC_r and ACC_f in %, on the test and the training split",
          table="table2_accuracy_mia", title="Table 2 form: accuracy and MIA",
          columns=[Column("acc_r_test", "ACC_r", "higher", audit="retain"), Column("acc_f_test", "ACC_f", "lower"),
                   Column("acc_r_train", "ACC_r train", "higher", in_table=False, audit="retain"),
                   Column("acc_f_train", "ACC_f train", "lower", in_table=False)])
def compute_accuracy(ctx: EvalContext) -> dict:
    results: dict = {}
    for split, probs, labels in (("test", ctx.target.test_probs, ctx.dataset.test_labels),
                                 ("train", ctx.target.train_probs_at(ctx.rows), ctx.labels_train)):
        result = accuracy(probs, labels, ctx.forget, seed=ctx.seed)
        for kind in ("r", "f"):
            results[f"acc_{kind}_{split}"] = getattr(result, f"acc_{kind}")
            results[f"acc_{kind}_{split}_ci"] = getattr(result, f"acc_{kind}_ci")
        if split == "test":
            results["per_class_acc_test"] = result.per_class
    return results
