"""RMIA (Zarifzadeh et al. 2024): membership scores from likelihood ratios against reference models, as AUCs.

For a sample x with label y, Pr(x|theta) = p_theta(y|x) under the target model, and Pr(x) is its average over
reference models trained on random halves of the training split. Offline (the references never train on the
samples scored as unseen, so they cannot tell those apart by construction), Pr(x) uses the OUT references alone,
P_out(x) = mean of p(y|x) over the references that did not train on x, and approximates the IN side linearly:
Pr(x) = ((1 + a) * P_out(x) + (1 - a)) / 2.

The score is the ratio Pr(x|theta) / Pr(x), computed in log space from logits. RMIA's pairwise test against
population samples z, score(x) = fraction of z with ratio(x) / ratio(z) >= gamma, is a monotone function of
ratio(x) for a fixed population, so it has the same AUC and TPR wherever it does not saturate; but after
forgetting, every forget sample's ratio lies below every population sample's, all of their scores tie at 0, and
the forget-set AUC collapsed to exactly 0.5 for any model with p_f ~ 0. The ratio itself keeps ranking them:
log p_f of -20 and of -25 are different answers. (Only outputs that carry nothing, such as RW-mask's -inf
forget logits, tie.)

`a` is tuned on the reference models, as the RMIA paper does: each reference in turn plays the target (its own
training half is known), the others are its references, and the `a` of the grid with the highest mean AUC wins.

The unlearning evaluation asks whether the AUC of training against unseen samples of the forget classes
(D_train_f vs D_test_f) has fallen to the retrained model's level (about 0.5), while that of the retained classes
(D_train_r vs D_test_r) stays as the original's. TPR at 1% FPR is reported beside each AUC, and each AUC has a
bootstrap interval (members and non-members resampled separately).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from fastforget.errors import ConfigError
from fastforget.metrics._common import (
    ArrayLike,
    MetricResult,
    as_forget,
    as_labels,
    as_model_stack,
    as_outputs,
    check_same_classes,
    to_numpy,
)
from fastforget.metrics.intervals import Interval, auc_of, bootstrap_auc
from fastforget.metrics.registry import Column, EvalContext, register

LOW_FPR = 0.01
A_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
REFERENCE_MODELS = 4


def as_mask(mask: ArrayLike | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of the given shape; None means all False."""
    if mask is None:
        return np.zeros(shape, dtype=bool)
    array = to_numpy(mask)
    if array.shape != shape or array.dtype != bool:
        raise ValueError(f"{name} must be a bool array of shape {list(shape)}, got {array.dtype} {list(array.shape)}")
    return array


def true_class_log_probability(outputs: np.ndarray, labels: np.ndarray, *, from_logits: bool) -> np.ndarray:
    """log p(y|x) for outputs [..., n, K] and labels [n]: [..., n] (-inf where p is exactly 0)."""
    with np.errstate(divide="ignore"):
        log_probs = log_softmax(outputs, axis=-1) if from_logits else np.log(outputs)
    index = np.broadcast_to(labels[:, None], (*log_probs.shape[:-1], 1))
    return np.take_along_axis(log_probs, index, axis=-1)[..., 0]


def log_marginal(reference: np.ndarray, reference_in: np.ndarray, a: float) -> np.ndarray:
    """Offline log Pr(x) from the references' true-class log-probabilities [R, n] and in-masks [R, n]: [n]."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"RMIA needs 0 <= a <= 1, got a={a}")
    is_out = ~reference_in
    n_out = is_out.sum(0)
    if (n_out == 0).any():
        raise ValueError(f"{int((n_out == 0).sum())} samples have no OUT reference model (every reference trained "
                         "on them): RMIA needs at least one model per sample that did not see it")
    log_p_out = logsumexp(np.where(is_out, reference, -np.inf), axis=0) - np.log(n_out)
    with np.errstate(divide="ignore"):
        return np.log(0.5) + np.logaddexp(np.log1p(a) + log_p_out, np.log(1.0 - a))


def log_ratio(target: np.ndarray, reference: np.ndarray, reference_in: np.ndarray, a: float) -> np.ndarray:
    """RMIA's score log(Pr(x|theta) / Pr(x)) per sample, from true-class log-probabilities."""
    return target - log_marginal(reference, reference_in, a)


def tune_a(reference: np.ndarray, reference_in: np.ndarray, grid: Iterable[float] = A_GRID
           ) -> tuple[float, dict[float, float]]:
    """The `a` whose scores best separate each reference model's own members, the others as its references.

    `reference` [R, n] true-class log-probabilities, `reference_in` [R, n]; samples without an OUT model among
    the others are left out of that round. Returns (best a, {a: mean AUC}).
    """
    if len(reference) < 2:
        raise ValueError("tuning a needs at least 2 reference models (one plays the target)")
    mean_auc = {}
    for a in grid:
        aucs = []
        for r in range(len(reference)):
            others = np.arange(len(reference)) != r
            usable = (~reference_in[others]).any(0)
            members = reference_in[r, usable]
            if members.all() or not members.any():
                continue
            scores = log_ratio(reference[r, usable], reference[others][:, usable], reference_in[others][:, usable], a)
            aucs.append(auc_of(scores[members], scores[~members]))
        mean_auc[float(a)] = float(np.mean(aucs)) if aucs else 0.5
    best = max(mean_auc, key=lambda a: (mean_auc[a], -abs(a - 0.5)))
    return best, mean_auc


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr: float = LOW_FPR) -> float:
    """The highest fraction of members scored above a threshold that at most `fpr` of non-members exceed."""
    nonmembers = np.sort(scores[~members])[::-1]
    allowed = int(np.floor(fpr * len(nonmembers)))
    if allowed >= len(nonmembers):
        return 1.0
    return float((scores[members] > nonmembers[allowed]).mean())


@dataclass
class MembershipSeparation(MetricResult):
    """How well scores tell training (member) from unseen samples of one set; None without both kinds."""

    auc: float | None
    auc_ci: Interval | None
    tpr_at_1pct_fpr: float | None
    n_members: int
    n_nonmembers: int


def membership_separation(scores: np.ndarray, members: np.ndarray, *, seed: int = 0) -> MembershipSeparation:
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())
    if not n_members or not n_nonmembers:
        return MembershipSeparation(None, None, None, n_members, n_nonmembers)
    return MembershipSeparation(auc_of(scores[members], scores[~members]),
                                bootstrap_auc(scores, members, seed=seed), tpr_at_fpr(scores, members),
                                n_members, n_nonmembers)


@dataclass
class RMIAResult(MetricResult):
    forget: MembershipSeparation  # D_train_f vs D_test_f: a retrained model gives about 0.5
    retain: MembershipSeparation  # D_train_r vs D_test_r
    a: float
    a_tuned: bool
    a_grid_auc: dict[str, float] | None  # mean AUC of the references on each other, per a of the grid
    n_reference: int


def rmia(target_x: ArrayLike, labels_x: ArrayLike, members_x: ArrayLike, reference_x: ArrayLike,
         forget: int | Iterable[int], *, reference_in_x: ArrayLike | None = None, a: float | None = None,
         from_logits: bool = False, seed: int = 0) -> RMIAResult:
    """RMIA AUCs per set from the target's outputs [n, K] and the references' [R, n, K] on samples x with labels
    [n]; `members_x` [n] is True for the target's training samples and `reference_in_x` [R, n] says which samples
    each reference trained on (None: none). `a` None tunes it on the references. Probabilities, or logits with
    from_logits=True (exact where probabilities round to 0)."""
    probabilities = not from_logits
    target_x = as_outputs(target_x, "target_x", probabilities=probabilities)
    reference_x = as_model_stack(reference_x, "reference_x", probabilities=probabilities)
    check_same_classes(target_x, reference_x, "target_x", "reference_x")
    n, num_classes = target_x.shape
    if reference_x.shape[1] != n:
        raise ValueError(f"reference_x {reference_x.shape} must be [R, {n}, K]: the reference models' outputs on "
                         "the same samples as the target's")
    labels_x = as_labels(labels_x, "labels_x", length=n, num_classes=num_classes)
    members_x = as_mask(members_x, "members_x", (n,))
    reference_in = as_mask(reference_in_x, "reference_in_x", reference_x.shape[:2])
    reference = true_class_log_probability(reference_x, labels_x, from_logits=from_logits)
    grid_auc = None
    if a is None:
        a, grid_auc = tune_a(reference, reference_in)
    scores = log_ratio(true_class_log_probability(target_x, labels_x, from_logits=from_logits), reference,
                       reference_in, a)
    is_forget = np.isin(labels_x, as_forget(forget, num_classes))
    return RMIAResult(
        forget=membership_separation(scores[is_forget], members_x[is_forget], seed=seed),
        retain=membership_separation(scores[~is_forget], members_x[~is_forget], seed=seed),
        a=float(a), a_tuned=grid_auc is not None,
        a_grid_auc=None if grid_auc is None else {f"{k:.2f}": v for k, v in grid_auc.items()},
        n_reference=len(reference_x),
    )


@register("rmia", summary="RMIA AUC of training vs unseen samples, forget and retained classes, with TPR at 1% "
                          "FPR; reference models on random halves, offline, a tuned on them",
          needs=("references",), default=False, table="rmia", title="RMIA",
          columns=[Column("rmia_auc_f", "RMIA AUC f", "0.5", decimals=3, informative="rmia_informative",
                          evidence="rmia_auc_r"),
                   Column("rmia_tpr_at_1pct_fpr_f", "TPR@1%FPR f", "lower", decimals=3,
                          informative="rmia_informative", evidence="rmia_auc_r", audit="none"),  # no interval
                   Column("rmia_auc_r", "RMIA AUC r", "none", decimals=3),
                   Column("rmia_tpr_at_1pct_fpr_r", "TPR@1%FPR r", "none", decimals=3)],
          settings={"reference_models": REFERENCE_MODELS, "rmia_a": None})
def compute_rmia(ctx: EvalContext) -> dict:
    if ctx.setting("reference_models") < 2:
        raise ConfigError(f"RMIA needs at least 2 reference models (paired halves: every sample has one that did "
                          f"not train on it), got {ctx.setting('reference_models')}: raise --reference-models "
                          f"(bench.reference_models), the default is {REFERENCE_MODELS}")
    references = ctx.references_on(ctx.rows)
    n_train, n_test = len(ctx.rows), len(ctx.dataset.test_labels)
    result = rmia(
        torch.cat([ctx.target.train_at(ctx.rows), ctx.target.test]),
        torch.cat([ctx.labels_train, ctx.dataset.test_labels]),
        torch.cat([torch.ones(n_train, dtype=torch.bool), torch.zeros(n_test, dtype=torch.bool)]),
        torch.cat([references.train, references.test], dim=1),
        ctx.forget,
        reference_in_x=torch.cat([references.train_in, torch.zeros(len(references.train), n_test, dtype=torch.bool)],
                                 dim=1),
        a=ctx.setting("rmia_a"), from_logits=True, seed=ctx.seed)
    results: dict = {"rmia_a": result.a, "rmia_a_tuned": result.a_tuned, "rmia_reference_models": result.n_reference}
    for side, separation in (("f", result.forget), ("r", result.retain)):
        results |= {f"rmia_auc_{side}": separation.auc, f"rmia_auc_{side}_ci": separation.auc_ci,
                    f"rmia_tpr_at_1pct_fpr_{side}": separation.tpr_at_1pct_fpr}
    # The retained classes' training samples were members of the target: an attack that cannot tell them from the
    # unseen ones (AUC interval reaching 0.5) says nothing about the forget class either.
    retain_ci = results["rmia_auc_r_ci"]
    results["rmia_informative"] = bool(retain_ci is not None and retain_ci[0] > 0.5)
    return results
