"""What every metric shares: model outputs checked and turned into numpy, and results that serialise to JSON.

Metrics take torch tensors (any device or dtype) or numpy arrays and compute in float64 numpy, because they
run once per evaluation on at most a few tens of thousands of rows and exactness matters more than speed there.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from fastforget.errors import UnknownClassError

ArrayLike = torch.Tensor | np.ndarray | Sequence

# bf16/fp16 softmax rows can miss 1 by a few 1e-3; logits passed by mistake miss it by far more.
PROBABILITY_SUM_TOLERANCE = 1e-2
# Probabilities come from float32 softmax: anything below float32's smallest normal number is underflow.
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)


class MetricResult:
    """Mixin for result dataclasses: `as_dict()` gives plain JSON-ready Python values."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A tensor on any device, or an array-like, as a numpy array of its own dtype."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_float64(x: ArrayLike, name: str, *, logits: bool = False) -> np.ndarray:
    """Any tensor (bf16 and CUDA included) or array-like as a float64 numpy array: finite, except that logits
    may be -inf (a masked class, as RW-mask's)."""
    if isinstance(x, torch.Tensor):
        array = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        array = np.asarray(x, dtype=np.float64)
    check_finite(array, name, logits=logits)
    return array


def check_finite(x: np.ndarray | torch.Tensor, name: str, *, logits: bool = False) -> None:
    bad = (x != x) | (x == np.inf) if logits else ~(np.isfinite(x) if isinstance(x, np.ndarray) else x.isfinite())
    if bool(bad.any()):
        raise ValueError(f"{name} holds NaN or infinite values: check the model outputs that produced it")


def check_probabilities(x: np.ndarray | torch.Tensor, name: str) -> None:
    """Reject rows that are not distributions, which nearly always means logits were passed by mistake."""
    if x.shape[-2] == 0:
        return
    deviation = float(abs(x.sum(-1) - 1).max())
    if x.min() < -1e-6 or deviation > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
            f"{name} does not hold probabilities (rows must be non-negative and sum to 1; largest deviation "
            f"of a row sum from 1: {deviation:.3g}): pass softmax(logits), or from_logits=True where the "
            "metric offers it")


def as_outputs(x: ArrayLike, name: str, *, ndim: int = 2, probabilities: bool = True) -> np.ndarray:
    """Model outputs of shape [..., N, K] with exactly `ndim` dimensions, as float64."""
    array = to_float64(x, name, logits=not probabilities)
    if array.ndim != ndim or array.shape[-1] < 2:
        layout = "[" + ", ".join(["M"] * (ndim - 2) + ["N", "K"]) + "]"
        raise ValueError(f"{name} must have shape {layout} with K >= 2 classes, got shape {tuple(array.shape)}")
    if probabilities:
        check_probabilities(array, name)
    return array


def as_model_stack(outputs: ArrayLike | Sequence[ArrayLike], name: str, *, probabilities: bool) -> np.ndarray:
    """Outputs of one model [N, K], of several stacked [M, N, K], or a list of [N, K], as [M, N, K]."""
    if isinstance(outputs, (list, tuple)):
        if not outputs:
            raise ValueError(f"{name} is an empty list: pass the outputs of at least one model")
        arrays = [to_float64(model_outputs, f"{name}[{i}]", logits=not probabilities)
                  for i, model_outputs in enumerate(outputs)]
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"the models in {name} have outputs of different shapes "
                             f"{[array.shape for array in arrays]}: evaluate every model on the same samples")
        outputs = np.stack(arrays)
    stack = to_float64(outputs, name, logits=not probabilities)
    return as_outputs(stack[None] if stack.ndim == 2 else stack, name, ndim=3, probabilities=probabilities)


def check_same_classes(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Outputs of different models or splits must cover the same K classes to be compared."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name_a} has {a.shape[-1]} classes but {name_b} has {b.shape[-1]}: pass outputs of "
                         "models over the same classes")


def as_labels(y: ArrayLike, name: str, *, length: int, num_classes: int) -> np.ndarray:
    """Integer class labels [N] in range(num_classes), as int64."""
    labels = to_numpy(y)
    if labels.ndim != 1 or len(labels) != length:
        raise ValueError(f"{name} must have shape [{length}] to match the outputs, got {tuple(labels.shape)}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UnknownClassError(
            f"{name} holds class {labels.min() if labels.min() < 0 else labels.max()}, outside the model's "
            f"{num_classes} classes: pass labels of the data set the model was trained on")
    return labels


def as_forget(forget: int | Iterable[int], num_classes: int) -> np.ndarray:
    """The forget classes as a sorted int64 array; at least one class forgotten and one retained."""
    if isinstance(forget, (torch.Tensor, np.ndarray)):
        values = to_numpy(forget)
    else:
        values = np.asarray([forget] if isinstance(forget, numbers.Integral) else list(forget))
    classes = np.unique(np.atleast_1d(values))
    if classes.size == 0:
        raise ValueError("forget is empty: name at least one class index to forget")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"forget must hold class indices (resolve names first), got {classes.tolist()}")
    outside = [int(c) for c in classes if not 0 <= c < num_classes]
    if outside:
        raise UnknownClassError(f"forget classes {outside} are outside the model's {num_classes} classes")
    if classes.size == num_classes:
        raise ValueError("every class is in forget: at least one class must be retained")
    return classes.astype(np.int64)


def true_class_probability(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(y|x) of each row's own label y, for probs [..., N, K] and labels [N]: the signal of most attacks."""
    index = np.broadcast_to(labels[:, None], (*probs.shape[:-1], 1))
    return np.take_along_axis(probs, index, axis=-1)[..., 0]
