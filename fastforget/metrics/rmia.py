"""RMIA (Zarifzadeh et al. 2024): membership scores from likelihood ratios against a population, as AUCs.

For a sample x with label y, Pr(x|theta) = p_theta(y|x) under the target model, and Pr(x) is its average over
reference models trained on random halves of the data. A sample is compared with population samples z (drawn
from the same distribution, used to train neither the target nor, ideally, the references):

    LR(x, z) = (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z)),   score(x) = fraction of z with LR(x, z) >= gamma.

Pr(s) for any sample s is (P_in(s) + P_out(s)) / 2, where P_out (P_in) is the mean of p(y|s) over the
reference models that did not (did) train on s, as given by the in-masks:
- "offline" uses OUT models only and approximates P_in(s) = a * P_out(s) + (1 - a), i.e.
  Pr(s) = ((1 + a) * P_out(s) + (1 - a)) / 2; the paper tunes a per data set (0.3 is its CIFAR-10 value);
- "online" uses the IN models' mean as P_in wherever a sample has IN models, the offline approximation where
  it has none (population samples, typically). Without in-masks every reference counts as OUT.
Every sample needs at least one OUT reference model.

The unlearning evaluation asks whether the AUC of training against unseen samples of the forget classes
(D_train_f vs D_test_f) has fallen to the retrained model's level (about 0.5), while that of the retained classes
(D_train_r vs D_test_r) stays as it was. TPR at 1% FPR is reported beside each AUC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fastforget.metrics._common import (
    PROBABILITY_FLOOR,
    ArrayLike,
    MetricResult,
    as_forget,
    as_labels,
    as_model_stack,
    as_outputs,
    check_same_classes,
    to_float64,
    to_numpy,
    true_class_probability,
)

Mode = Literal["offline", "online"]
MODES: tuple[str, ...] = ("offline", "online")
LOW_FPR = 0.01


def as_mask(mask: ArrayLike | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of the given shape; None means all False."""
    if mask is None:
        return np.zeros(shape, dtype=bool)
    array = to_numpy(mask)
    if array.shape != shape or array.dtype != bool:
        raise ValueError(f"{name} must be a bool array of shape {list(shape)}, got {array.dtype} {list(array.shape)}")
    return array


def marginal_probability(reference: np.ndarray, reference_in: np.ndarray, *, mode: Mode, a: float) -> np.ndarray:
    """Pr(s) from true-label probabilities of the reference models [R, n] and their in-masks [R, n]: [n]."""
    is_out = ~reference_in
    n_out = is_out.sum(0)
    if (n_out == 0).any():
        raise ValueError(f"{int((n_out == 0).sum())} samples have no OUT reference model (every reference trained "
                         "on them): RMIA needs at least one model per sample that did not see it")
    p_out = np.where(is_out, reference, 0.0).sum(0) / n_out
    p_in = a * p_out + (1.0 - a)
    if mode == "online":
        n_in = reference_in.sum(0)
        p_in = np.where(n_in > 0, np.where(reference_in, reference, 0.0).sum(0) / np.maximum(n_in, 1), p_in)
    elif mode != "offline":
        raise ValueError(f"unknown RMIA mode {mode!r}: choose one of {', '.join(MODES)}")
    return 0.5 * (p_in + p_out)


def rmia_scores(target_x: ArrayLike, reference_x: ArrayLike, target_z: ArrayLike, reference_z: ArrayLike, *,
                reference_in_x: ArrayLike | None = None, reference_in_z: ArrayLike | None = None,
                mode: Mode = "offline", a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA score per sample x from true-label probabilities: target [n] and references [R, n] on x, target [m]
    and references [R, m] on z; in-masks [R, n] and [R, m] (None: no reference trained on those samples).

    The fraction of z with LR(x, z) >= gamma equals the fraction with ratio(z) <= ratio(x) / gamma, counted by
    binary search in a sorted copy instead of over all n x m pairs.
    """
    if not 0.0 <= a <= 1.0 or not gamma > 0.0:
        raise ValueError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    signals = {name: to_float64(array, name) for name, array in
               (("target_x", target_x), ("reference_x", reference_x), ("target_z", target_z),
                ("reference_z", reference_z))}
    for side in ("x", "z"):
        target, reference = signals[f"target_{side}"], signals[f"reference_{side}"]
        if target.ndim != 1 or reference.ndim != 2 or reference.shape[1] != len(target):
            raise ValueError(f"target_{side} {target.shape} and reference_{side} {reference.shape} must be [n] and "
                             "[R, n]: true-label probabilities of the target and of R reference models")
    if len(signals["reference_x"]) != len(signals["reference_z"]) or not len(signals["target_z"]):
        raise ValueError("reference_x and reference_z must come from the same reference models, and the "
                         "population z must not be empty")
    in_x = as_mask(reference_in_x, "reference_in_x", signals["reference_x"].shape)
    in_z = as_mask(reference_in_z, "reference_in_z", signals["reference_z"].shape)

    def ratio(target: np.ndarray, reference: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
        marginal = marginal_probability(reference, reference_in, mode=mode, a=a)
        return np.maximum(target, PROBABILITY_FLOOR) / np.maximum(marginal, PROBABILITY_FLOOR)

    ratio_z = np.sort(ratio(signals["target_z"], signals["reference_z"], in_z))
    ratio_x = ratio(signals["target_x"], signals["reference_x"], in_x)
    return np.searchsorted(ratio_z, ratio_x / gamma, side="right") / len(ratio_z)


@dataclass
class MembershipSeparation(MetricResult):
    """How well scores tell training (member) from unseen samples of one set; None without both kinds."""

    auc: float | None
    tpr_at_1pct_fpr: float | None
    n_members: int
    n_nonmembers: int


def membership_separation(scores: np.ndarray, members: np.ndarray) -> MembershipSeparation:
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())
    if not n_members or not n_nonmembers:
        return MembershipSeparation(None, None, n_members, n_nonmembers)
    fpr, tpr, _ = roc_curve(members, scores, drop_intermediate=False)  # keep every threshold near 1% FPR
    return MembershipSeparation(float(roc_auc_score(members, scores)), float(tpr[fpr <= LOW_FPR].max()),
                                n_members, n_nonmembers)


@dataclass
class RMIAResult(MetricResult):
    forget: MembershipSeparation  # D_train_f vs D_test_f: a retrained model gives about 0.5
    retain: MembershipSeparation  # D_train_r vs D_test_r
    mode: str
    a: float
    gamma: float
    n_reference: int
    n_population: int


def rmia(target_x: ArrayLike, labels_x: ArrayLike, members_x: ArrayLike, reference_x: ArrayLike,
         target_z: ArrayLike, labels_z: ArrayLike, reference_z: ArrayLike, forget: int | Iterable[int], *,
         reference_in_x: ArrayLike | None = None, reference_in_z: ArrayLike | None = None, mode: Mode = "offline",
         a: float = 0.3, gamma: float = 1.0) -> RMIAResult:
    """RMIA AUCs per set from probabilities: target [n, K] and references [R, n, K] on samples x (labels [n],
    `members_x` [n] True for the target's training samples), the same on the population z ([m, K], [R, m, K]).

    `reference_in_x` / `reference_in_z` [R, n] / [R, m] say which samples each reference model trained on.
    For large reference sets, extract the true-label probabilities yourself and call `rmia_scores`.
    """
    target_x = as_outputs(target_x, "target_x")
    target_z = as_outputs(target_z, "target_z")
    reference_x = as_model_stack(reference_x, "reference_x", probabilities=True)
    reference_z = as_model_stack(reference_z, "reference_z", probabilities=True)
    for name, array in (("target_z", target_z), ("reference_x", reference_x), ("reference_z", reference_z)):
        check_same_classes(target_x, array, "target_x", name)
    (n, num_classes), m = target_x.shape, len(target_z)
    if reference_x.shape[1] != n or reference_z.shape[1] != m:
        raise ValueError(f"reference_x {reference_x.shape} and reference_z {reference_z.shape} must be [R, {n}, K] "
                         f"and [R, {m}, K]: the reference models' outputs on the same samples as the target's")
    labels_x = as_labels(labels_x, "labels_x", length=n, num_classes=num_classes)
    labels_z = as_labels(labels_z, "labels_z", length=m, num_classes=num_classes)
    members_x = as_mask(members_x, "members_x", (n,))

    scores = rmia_scores(
        true_class_probability(target_x, labels_x), true_class_probability(reference_x, labels_x),
        true_class_probability(target_z, labels_z), true_class_probability(reference_z, labels_z),
        reference_in_x=reference_in_x, reference_in_z=reference_in_z,
        mode=mode, a=a, gamma=gamma)
    is_forget = np.isin(labels_x, as_forget(forget, num_classes))
    return RMIAResult(
        forget=membership_separation(scores[is_forget], members_x[is_forget]),
        retain=membership_separation(scores[~is_forget], members_x[~is_forget]),
        mode=mode, a=a, gamma=gamma, n_reference=len(reference_x), n_population=m,
    )
