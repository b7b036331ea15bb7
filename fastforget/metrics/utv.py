"""UTV, the paper's unlearning discrepancy (section 6.3): how far an unlearned model's outputs on forget samples
are from a retrained model's, as the mean total variation distance 0.5 * sum_y |p_r(y|x) - p_u(y|x)|.

Two yardsticks go beyond the paper. The floor: retrained models of different seeds disagree with each other
too, so the mean TV between pairs of them is the least any method can be expected to reach. The RWFT target's
own UTV, TV(q*, p_retrained): fine-tuning towards q* cannot be expected to get closer than q* itself, so it
tells a poor target apart from poor optimisation.

The distances come from `kernels.tv_distance`, with all retrained models stacked into one [M, N, K] call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fastforget.kernels import reweighted_target, tv_distance
from fastforget.metrics._common import (
    ArrayLike,
    MetricResult,
    as_forget,
    as_model_stack,
    as_outputs,
    to_float64,
)


@dataclass
class UTVResult(MetricResult):
    utv: float  # against the first retrained model (the one of the same seed)
    utv_per_retrained: list[float]
    utv_mean: float  # over all retrained models
    floor: float | None  # mean TV between pairs of retrained models; None with a single one
    n_samples: int
    n_retrained: int


def mean_tv(a: np.ndarray, b: np.ndarray, *, from_logits: bool) -> np.ndarray:
    """Mean over samples of the TV distance between rows of a [M, N, K] and b [N, K] or [M, N, K]: [M]."""
    distances = tv_distance(torch.from_numpy(a), torch.from_numpy(b), from_logits=from_logits)
    return to_float64(distances, "tv_distance").mean(-1)


def utv(probs_unlearned: ArrayLike, probs_retrained: ArrayLike | Sequence[ArrayLike], *,
        from_logits: bool = False) -> UTVResult:
    """UTV of an unlearned model's outputs [N, K] on forget samples against one or more retrained models.

    `probs_retrained` is [N, K], [M, N, K] or a list of [N, K], the first being the retrained model of the same
    seed; with two or more the floor is reported as well. Pass logits instead with from_logits=True.
    """
    unlearned = as_outputs(probs_unlearned, "probs_unlearned", probabilities=not from_logits)
    retrained = as_model_stack(probs_retrained, "probs_retrained", probabilities=not from_logits)
    if retrained.shape[1:] != unlearned.shape:
        raise ValueError(f"probs_unlearned {unlearned.shape} and each retrained model's outputs "
                         f"{retrained.shape[1:]} must be [N, K] on the same N samples")
    if len(unlearned) == 0:
        raise ValueError("no forget samples: UTV is a mean over the forget samples and needs at least one")
    per_model = mean_tv(retrained, unlearned, from_logits=from_logits)
    first, second = np.triu_indices(len(retrained), 1)
    floor = float(mean_tv(retrained[first], retrained[second], from_logits=from_logits).mean()) if len(first) else None
    return UTVResult(
        utv=float(per_model[0]),
        utv_per_retrained=[float(value) for value in per_model],
        utv_mean=float(per_model.mean()),
        floor=floor,
        n_samples=len(unlearned),
        n_retrained=len(retrained),
    )


def target_utv(logits_original: ArrayLike, probs_retrained: ArrayLike | Sequence[ArrayLike],
               forget: int | Iterable[int], *,
               reassign: Literal["proportional", "max-class"] = "proportional") -> UTVResult:
    """UTV of the RWFT target q* itself, built from the original model's logits on the forget samples.

    Takes logits, not probabilities, because q* is a softmax with the forget columns at -inf: recovering it
    from probabilities would divide by 1 - p_f, which is 0 on exactly the confident samples that matter.
    With q* already at hand, call `utv(q_star, probs_retrained)`.
    """
    logits = as_outputs(logits_original, "logits_original", probabilities=False)
    forget_classes = as_forget(forget, logits.shape[1]).tolist()
    return utv(reweighted_target(torch.from_numpy(logits), forget_classes, reassign), probs_retrained)
