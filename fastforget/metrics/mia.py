"""The SVM membership attack of the paper's Table 2 (after Kodge et al.), and the SVM that MIA-NN reuses.

Protocol: a per-sample feature of the model's output (by default its confidence in the true class) is computed
on D_train_r (members, label 1) and D_test_r (non-members, label 0). The larger side is subsampled to the size of
the smaller and each side is capped at `max_per_side` (seeded by the evaluation seed, so every model of a
comparison is attacked on the same rows), an RBF SVM (C=3, gamma="auto") is fitted, and the score is 100 x the
fraction of D_train_f that it calls non-member: about 0 for an original that fits its training set, about 100
for a retrained one. D_train_f is always scored whole; the cap only bounds the SVM's fit, whose time grows with
the square of the points (bench/README.md: 4x per doubling, 3 s at 2,000 per side and 50 s at 8,000 on a loaded
2-core machine), and a one-dimensional threshold is well placed long before that.

The score only means something if the attack separates its own training sets, which a model that barely
overfits does not allow. So a twin SVM, fitted on a seeded 1 - `heldout_fraction` of the balanced sets, reports
its ROC AUC on the rest, together with the band of AUCs that an attack blind to membership reaches on those same
held-out samples by chance (the central 99% of the AUC's permutation distribution under shuffled member labels,
ties included; about 0.5 +- 2.58 / sqrt(6 n) for n held-out samples per side, 0.5 +- 0.047 at the 500 a capped
attack holds out). An AUC inside that band (or below it) marks the score as uninformative.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.svm import SVC

from fastforget.metrics._common import (
    PROBABILITY_FLOOR,
    ArrayLike,
    MetricResult,
    as_forget,
    as_labels,
    as_outputs,
    check_same_classes,
    true_class_probability,
)
from fastforget.metrics.intervals import Interval, auc_null_band, bootstrap_mean
from fastforget.metrics.registry import Column, EvalContext, register

Feature = Literal["confidence", "entropy", "modified_entropy"]
FEATURES: tuple[str, ...] = ("confidence", "entropy", "modified_entropy")
MIN_PER_SIDE = 5
MAX_PER_SIDE = 2000


def svm_classifier() -> SVC:
    """The attack classifier of Kodge et al. and the l1-sparse reference code."""
    return SVC(kernel="rbf", C=3.0, gamma="auto")


def membership_feature(probs: np.ndarray, labels: np.ndarray, feature: Feature) -> np.ndarray:
    """One number per sample from probabilities [N, K] and labels [N].

    confidence: p(y|x). entropy: -sum_k p_k log p_k. modified_entropy (Song & Mittal 2021):
    -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k), which, unlike entropy, uses the label.
    """
    if feature == "confidence":
        return true_class_probability(probs, labels)
    if feature == "entropy":
        return -(probs * np.log(np.maximum(probs, PROBABILITY_FLOOR))).sum(1)
    if feature == "modified_entropy":
        p_true = true_class_probability(probs, labels)
        wrong_terms = probs * np.log(np.maximum(1.0 - probs, PROBABILITY_FLOOR))
        np.put_along_axis(wrong_terms, labels[:, None], 0.0, axis=1)
        return -(1.0 - p_true) * np.log(np.maximum(p_true, PROBABILITY_FLOOR)) - wrong_terms.sum(1)
    raise ValueError(f"unknown MIA feature {feature!r}: choose one of {', '.join(FEATURES)}")


@dataclass
class MembershipSVM:
    """A fitted attack and how well a twin of it, fitted without a held-out part, separates that part."""

    classifier: SVC
    n_per_side: int
    heldout_balanced_accuracy: float  # percent
    heldout_auc: float
    heldout_null_band: Interval  # AUCs a membership-blind attack reaches on the held-out part by chance

    @property
    def informative(self) -> bool:
        """The held-out AUC lies above the null band: the attack tells its own members apart."""
        return bool(self.heldout_auc > self.heldout_null_band[1])

    def nonmember_calls(self, features: np.ndarray) -> np.ndarray:
        """1.0 where a sample is called non-member, else 0.0."""
        return (self.classifier.predict(features[:, None]) == 0).astype(np.float64)


def fit_membership_svm(members: np.ndarray, nonmembers: np.ndarray, *, max_per_side: int, seed: int,
                       heldout_fraction: float) -> MembershipSVM:
    """Fit the SVM on member (1) vs non-member (0) features [n], balanced by subsampling, capped per side."""
    n_per_side = min(len(members), len(nonmembers), max_per_side)
    if n_per_side < MIN_PER_SIDE:
        raise ValueError(
            f"the attack has {len(members)} member and {len(nonmembers)} non-member samples; it needs at least "
            f"{MIN_PER_SIDE} of each (and max_per_side >= {MIN_PER_SIDE}): evaluate on a larger split")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie strictly between 0 and 1, got {heldout_fraction}")
    rng = np.random.default_rng(seed)
    members = rng.choice(members, n_per_side, replace=False)  # random order, so any prefix is a random subset
    nonmembers = rng.choice(nonmembers, n_per_side, replace=False)
    n_heldout = min(max(1, round(heldout_fraction * n_per_side)), n_per_side - 1)

    def features_and_targets(part: slice) -> tuple[np.ndarray, np.ndarray]:
        features = np.concatenate([members[part], nonmembers[part]])[:, None]
        side = len(members[part])
        return features, np.concatenate([np.ones(side), np.zeros(side)])

    probe = svm_classifier().fit(*features_and_targets(slice(n_heldout, None)))
    heldout_features, heldout_targets = features_and_targets(slice(None, n_heldout))
    heldout_scores = probe.decision_function(heldout_features)
    return MembershipSVM(
        classifier=svm_classifier().fit(*features_and_targets(slice(None))),
        n_per_side=int(n_per_side),
        heldout_balanced_accuracy=100.0 * float(
            balanced_accuracy_score(heldout_targets, probe.predict(heldout_features))),
        heldout_auc=float(roc_auc_score(heldout_targets, heldout_scores)),
        heldout_null_band=auc_null_band(heldout_scores, heldout_targets == 1),
    )


@dataclass
class MIAResult(MetricResult):
    score: float  # percent of D_train_f called non-member
    score_ci: Interval  # bootstrap over the D_train_f samples scored (the fitted attack held fixed)
    informative: bool  # False: the attack cannot tell its own members apart, the score means nothing
    feature: str
    n_per_side: int  # members = non-members used to fit the attack
    n_forget: int
    max_per_side: int
    seed: int
    attack_heldout_balanced_accuracy: float  # percent, 50 = the attack cannot tell members apart
    attack_heldout_auc: float
    attack_null_band: Interval


def mia(probs_train: ArrayLike, labels_train: ArrayLike, probs_test: ArrayLike, labels_test: ArrayLike,
        forget: int | Iterable[int], *, feature: Feature = "confidence", max_per_side: int = MAX_PER_SIDE,
        seed: int = 0, heldout_fraction: float = 0.25) -> MIAResult:
    """The paper's MIA score (percent of D_train_f called non-member) and the attack's own held-out quality."""
    probs_train = as_outputs(probs_train, "probs_train")
    probs_test = as_outputs(probs_test, "probs_test")
    num_classes = probs_train.shape[1]
    check_same_classes(probs_train, probs_test, "probs_train", "probs_test")
    labels_train = as_labels(labels_train, "labels_train", length=len(probs_train), num_classes=num_classes)
    labels_test = as_labels(labels_test, "labels_test", length=len(probs_test), num_classes=num_classes)
    forget = as_forget(forget, num_classes)
    train_is_forget = np.isin(labels_train, forget)
    if not train_is_forget.any():
        raise ValueError(f"no training sample has a forget label {forget.tolist()}: nothing to score")

    train_features = membership_feature(probs_train, labels_train, feature)
    test_features = membership_feature(probs_test, labels_test, feature)[~np.isin(labels_test, forget)]
    attack = fit_membership_svm(train_features[~train_is_forget], test_features, max_per_side=max_per_side,
                                seed=seed, heldout_fraction=heldout_fraction)
    calls = attack.nonmember_calls(train_features[train_is_forget])
    return MIAResult(
        score=100.0 * float(calls.mean()),
        score_ci=[100.0 * bound for bound in bootstrap_mean(calls, seed=seed)],
        informative=attack.informative,
        feature=feature,
        n_per_side=attack.n_per_side,
        n_forget=int(train_is_forget.sum()),
        max_per_side=max_per_side,
        seed=seed,
        attack_heldout_balanced_accuracy=attack.heldout_balanced_accuracy,
        attack_heldout_auc=attack.heldout_auc,
        attack_null_band=attack.heldout_null_band,
    )


@register("mia", summary="the paper's SVM membership attack (Table 2): % of D_train_f called non-member",
          table="table2_accuracy_mia", title="Table 2 form: accuracy and MIA",
          columns=[Column("mia", "MIA %", "higher", informative="mia_informative", evidence="mia_attack_auc")],
          settings={"mia_feature": "confidence", "max_per_side": MAX_PER_SIDE})
def compute_mia(ctx: EvalContext) -> dict:
    m = mia(ctx.target.train_probs_at(ctx.rows), ctx.labels_train, ctx.target.test_probs, ctx.dataset.test_labels,
            ctx.forget, feature=ctx.setting("mia_feature"), max_per_side=ctx.setting("max_per_side"), seed=ctx.seed)
    return {"mia": m.score, "mia_ci": m.score_ci, "mia_informative": m.informative, "mia_feature": m.feature,
            "mia_attack_auc": m.attack_heldout_auc, "mia_attack_null_band": m.attack_null_band,
            "mia_attack_balanced_accuracy": m.attack_heldout_balanced_accuracy, "mia_n_per_side": m.n_per_side}
