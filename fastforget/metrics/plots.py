"""PNG figures of the reassignment analysis: confusion matrices side by side (the paper's Fig. 1 and 3), where a
forgotten class goes (its Fig. 4: one model, or several side by side on one class order and axis) and what
unlearning cost each retained class (per-class accuracy drop).

Figures are drawn on matplotlib's Agg canvas through `Figure` objects, never pyplot, so that no global backend
or figure state is touched; files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from fastforget.io import atomic_write
from fastforget.metrics._common import ArrayLike, to_float64
from fastforget.metrics.reassignment import Reassigned

MAX_LABELLED_CLASSES = 20  # beyond this, class names overlap: ticks become sparse indices
MAX_ANNOTATED_CLASSES = 10  # cells get their percentage written in up to this size
DPI = 120


def save_png(figure: Figure, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    return class_names[index] if class_names is not None else str(index)


def set_class_ticks(axes: Axes, num_classes: int, class_names: Sequence[str] | None) -> None:
    """Every class labelled (by name when known) up to MAX_LABELLED_CLASSES, else about ten index ticks."""
    named = class_names is not None and num_classes <= MAX_LABELLED_CLASSES
    step = 1 if num_classes <= MAX_LABELLED_CLASSES else math.ceil(num_classes / 10)
    ticks = list(range(0, num_classes, step))
    labels = [class_label(i, class_names) if named else str(i) for i in ticks]
    axes.set_xticks(ticks, labels, rotation=90 if named else 0)
    axes.set_yticks(ticks, labels)


def plot_confusion_matrices(matrices: Mapping[str, ArrayLike], path: str | Path, *,
                            class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Row-normalised confusion matrices [K, K] (counts, rows = true class) side by side on one colour scale,
    titled by their keys, e.g. {"original": ..., "unlearned": ..., "retrained": ...} or any subset.

    Cells are percent of the true class on a square-root colour scale, so that a forgotten row spread as 2-38%
    over other classes stays visible beside the 90%+ diagonal; the colour bar is in the same percent."""
    if not matrices:
        raise ValueError("no confusion matrix to plot: pass at least one, e.g. {'unlearned': counts}")
    counts = {name: to_float64(matrix, f"confusion matrix {name!r}") for name, matrix in matrices.items()}
    num_classes = len(next(iter(counts.values())))
    for name, matrix in counts.items():
        if matrix.shape != (num_classes, num_classes):
            raise ValueError(f"confusion matrix {name!r} has shape {matrix.shape}; every matrix must be "
                             f"[{num_classes}, {num_classes}]")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")

    figure = Figure(figsize=(4.5 * len(counts) + 1.0, 4.8), layout="constrained")
    all_axes = figure.subplots(1, len(counts), squeeze=False)[0]
    for axes, (name, matrix) in zip(all_axes, counts.items(), strict=True):
        totals = matrix.sum(1, keepdims=True)
        percent = 100.0 * np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        image = axes.imshow(percent, norm=PowerNorm(0.5, vmin=0.0, vmax=100.0), cmap="Blues")
        axes.set(title=name, xlabel="predicted class", ylabel="true class")
        set_class_ticks(axes, num_classes, class_names)
        if num_classes <= MAX_ANNOTATED_CLASSES:
            for (row, column), value in np.ndenumerate(percent):
                if value >= 0.5:
                    axes.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                              color="white" if value > 40 else "black")
    bar = figure.colorbar(image, ax=list(all_axes), shrink=0.8, label="% of the true class (square-root scale)")
    bar.set_ticks([0, 2, 10, 25, 50, 75, 100])
    if title:
        figure.suptitle(title)
    return save_png(figure, path)


def plot_reassignment(reassigned: Reassigned, path: str | Path, *, class_names: Sequence[str] | None = None,
                      top: int = 10) -> Path:
    """Bar chart of the `top` classes that one forgotten class's samples are predicted as, with their shares."""
    shares = reassigned.shares[:top]
    if not shares:
        raise ValueError(f"forget class {reassigned.forget_class} has no reassigned samples to plot")
    names = [class_label(share.class_index, class_names) for share in shares]
    values = [100.0 * share.share for share in shares]

    figure = Figure(figsize=(6.0, 1.0 + 0.4 * len(shares)), layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(range(len(shares)), values, color="tab:blue")
    axes.bar_label(bars, labels=[f"{value:.1f}%" for value in values], padding=3, fontsize=8)
    axes.set_yticks(range(len(shares)), names)
    axes.invert_yaxis()  # largest share on top
    axes.set_xlim(0.0, min(100.0, max(values) * 1.2 + 5.0))
    axes.set(xlabel="share of the forgotten class's samples (%)",
             title=f"where {class_label(reassigned.forget_class, class_names)} goes "
                   f"(n = {reassigned.n_samples})")
    return save_png(figure, path)


def _grouped_bars(axes: Axes, values: Mapping[str, np.ndarray], class_names: Sequence[str]) -> None:
    """Horizontal bars per class (classes top to bottom in index order), one bar per model within each class."""
    height = 0.8 / len(values)
    positions = np.arange(len(class_names))
    for offset, (model, row) in enumerate(values.items()):
        axes.barh(positions + (offset - (len(values) - 1) / 2) * height, row, height=height, label=model)
    axes.set_yticks(positions, class_names)
    axes.invert_yaxis()
    axes.legend(loc="best", fontsize=8)


def plot_where_it_goes(reassigned: Mapping[str, Reassigned], path: str | Path, *, class_names: Sequence[str],
                       title: str | None = None) -> Path:
    """Where one forgotten class's samples are predicted, for several models side by side (e.g. the unlearned
    model beside the retrained one): every class in the same order, one axis from 0 to 100%."""
    forgotten = {r.forget_class for r in reassigned.values()}
    if len(forgotten) != 1:
        raise ValueError(f"the models must show one forgotten class, not {sorted(forgotten)}")
    forget_class = forgotten.pop()
    values = {}
    for model, moved in reassigned.items():
        row = np.zeros(len(class_names))
        for share in moved.shares:
            row[share.class_index] = 100.0 * share.share
        values[f"{model} (n = {moved.n_samples})"] = row
    figure = Figure(figsize=(7.0, 1.2 + 0.32 * len(class_names) * max(1, len(values) / 2)), layout="constrained")
    axes = figure.subplots()
    _grouped_bars(axes, values, class_names)
    axes.set_xlim(0.0, 100.0)
    axes.set(xlabel=f"share of {class_label(forget_class, class_names)}'s samples predicted as the class (%)",
             title=title or f"where {class_label(forget_class, class_names)} goes")
    return save_png(figure, path)


def plot_accuracy_drop(drops: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, *,
                       class_names: Sequence[str], title: str | None = None) -> Path:
    """Per retained class, the accuracy each model lost against the original (percentage points; negative is a
    gain), models side by side, classes in index order; `drops` maps a model to (class index, drop) pairs."""
    if not drops:
        raise ValueError("no accuracy drop to plot: pass at least one model's (class, drop) pairs")
    classes = sorted({index for pairs in drops.values() for index, _ in pairs})
    values = {}
    for model, pairs in drops.items():
        by_class = dict(pairs)
        values[model] = np.array([by_class.get(index, np.nan) for index in classes])
    figure = Figure(figsize=(7.0, 1.2 + 0.3 * len(classes) * max(1, len(values) / 2)), layout="constrained")
    axes = figure.subplots()
    _grouped_bars(axes, values, [class_label(i, class_names) for i in classes])
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set(xlabel="accuracy drop against the original (percentage points)",
             title=title or "per-class accuracy drop of the retained classes")
    return save_png(figure, path)
