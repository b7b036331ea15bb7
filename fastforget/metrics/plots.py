"""PNG figures of the reassignment analysis: confusion matrices side by side (the paper's Fig. 1 and 3) and the
top classes a forgotten class goes to (its Fig. 4).

Figures are drawn on matplotlib's Agg canvas through `Figure` objects, never pyplot, so that no global backend
or figure state is touched; files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
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
                            class_names: Sequence[str] | None = None) -> Path:
    """Row-normalised confusion matrices [K, K] (counts, rows = true class) side by side on one colour scale,
    titled by their keys, e.g. {"original": ..., "unlearned": ..., "retrained": ...} or any subset."""
    if not matrices:
        raise ValueError("no confusion matrix to plot: pass at least one, e.g. {'unlearned': counts}")
    counts = {title: to_float64(matrix, f"confusion matrix {title!r}") for title, matrix in matrices.items()}
    num_classes = len(next(iter(counts.values())))
    for title, matrix in counts.items():
        if matrix.shape != (num_classes, num_classes):
            raise ValueError(f"confusion matrix {title!r} has shape {matrix.shape}; every matrix must be "
                             f"[{num_classes}, {num_classes}]")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")

    figure = Figure(figsize=(4.5 * len(counts) + 1.0, 4.8), layout="constrained")
    all_axes = figure.subplots(1, len(counts), squeeze=False)[0]
    for axes, (title, matrix) in zip(all_axes, counts.items(), strict=True):
        totals = matrix.sum(1, keepdims=True)
        rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        image = axes.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
        axes.set(title=title, xlabel="predicted class", ylabel="true class")
        set_class_ticks(axes, num_classes, class_names)
        if num_classes <= MAX_ANNOTATED_CLASSES:
            for (row, column), rate in np.ndenumerate(rates):
                axes.text(column, row, f"{100 * rate:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if rate > 0.5 else "black")
    figure.colorbar(image, ax=list(all_axes), shrink=0.8, label="fraction of the true class")
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
