"""MIA-NN, the paper's attack through the nearest retained class (its Table 1, section 3.2 and appendix A.1).

A model retrained without class f sends f's samples to a similar retained class n (automobile -> truck). An
unlearned model that only suppresses f, and sends its samples elsewhere, gives itself away on class n.

Protocol "section3" (the default, Table 1): feature = the model's probability of class n. An SVM (the MIA's
settings: RBF, C=3, gamma="auto") learns test samples of class n (member, 1) against test samples outside F and
n (non-member, 0), balanced by subsampling the larger side, each side capped at `max_per_side` (seeded). The
score is the FRACTION (not percent) of D_test_f that it calls non-member: lower is better, a retrained model
scores near 0 because it puts D_test_f's mass on n just as class n's own samples get it.

Protocol "appendix" (A.1's second list): the same feature and SVM, members = D_train_r without class n,
non-members = the test samples of n, evaluated on the training samples of n (fraction called non-member).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fastforget.metrics._common import ArrayLike, MetricResult, as_forget, as_labels, as_outputs, check_same_classes
from fastforget.metrics.mia import fit_membership_svm

NearestMode = Literal["most_predicted", "highest_mean"]
Protocol = Literal["section3", "appendix"]
PROTOCOLS: tuple[str, ...] = ("section3", "appendix")


def nearest_class(probs_test_f: ArrayLike, forget: int | Iterable[int], mode: NearestMode = "most_predicted") -> int:
    """The retained class that forget samples lean to, from one model's probabilities on D_test_f.

    "most_predicted" (give it the RETRAINED model's outputs; SPEC's default): the class that model predicts most
    often, the argmax taken over retained classes only. "highest_mean" (for the ORIGINAL model, when no retrained
    one exists): the retained class with the highest mean probability. Ties go to the lower class index.
    """
    probs = as_outputs(probs_test_f, "probs_test_f")
    if len(probs) == 0:
        raise ValueError("probs_test_f is empty: pass the model's outputs on the test samples of the forget classes")
    retained_probs = probs.copy()
    retained_probs[:, as_forget(forget, probs.shape[1])] = -np.inf
    if mode == "most_predicted":
        return int(np.bincount(retained_probs.argmax(1), minlength=probs.shape[1]).argmax())
    if mode == "highest_mean":
        return int(retained_probs.mean(0).argmax())
    raise ValueError(f"unknown nearest-class mode {mode!r}: choose 'most_predicted' or 'highest_mean'")


@dataclass
class MIANNResult(MetricResult):
    score: float  # FRACTION of the evaluated samples called non-member
    nearest_class: int
    protocol: str
    n_per_side: int
    n_evaluated: int
    max_per_side: int
    seed: int
    attack_heldout_balanced_accuracy: float  # percent
    attack_heldout_auc: float


def mia_nn(probs_test: ArrayLike, labels_test: ArrayLike, forget: int | Iterable[int], nearest: int, *,
           protocol: Protocol = "section3", probs_train: ArrayLike | None = None,
           labels_train: ArrayLike | None = None, max_per_side: int = 2000, seed: int = 0,
           heldout_fraction: float = 0.25) -> MIANNResult:
    """MIA-NN score through class `nearest` (see `nearest_class`); "appendix" also needs the training split."""
    probs_test = as_outputs(probs_test, "probs_test")
    num_classes = probs_test.shape[1]
    labels_test = as_labels(labels_test, "labels_test", length=len(probs_test), num_classes=num_classes)
    forget = as_forget(forget, num_classes)
    if not 0 <= nearest < num_classes or nearest in forget:
        raise ValueError(f"nearest class {nearest} must be a retained class index (forget = {forget.tolist()}, "
                         f"{num_classes} classes): compute it with nearest_class()")
    test_feature = probs_test[:, nearest]
    if protocol == "section3":
        members = test_feature[labels_test == nearest]
        nonmembers = test_feature[~np.isin(labels_test, [*forget, nearest])]
        evaluated = test_feature[np.isin(labels_test, forget)]
    elif protocol == "appendix":
        if probs_train is None or labels_train is None:
            raise ValueError("protocol 'appendix' attacks the training split: pass probs_train and labels_train")
        probs_train = as_outputs(probs_train, "probs_train")
        check_same_classes(probs_train, probs_test, "probs_train", "probs_test")
        labels_train = as_labels(labels_train, "labels_train", length=len(probs_train), num_classes=num_classes)
        train_feature = probs_train[:, nearest]
        members = train_feature[~np.isin(labels_train, [*forget, nearest])]
        nonmembers = test_feature[labels_test == nearest]
        evaluated = train_feature[labels_train == nearest]
    else:
        raise ValueError(f"unknown MIA-NN protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if len(evaluated) == 0:
        raise ValueError(f"protocol {protocol!r} has no sample to evaluate: the split lacks the classes it scores")
    attack = fit_membership_svm(members, nonmembers, max_per_side=max_per_side, seed=seed,
                                heldout_fraction=heldout_fraction)
    return MIANNResult(
        score=attack.nonmember_fraction(evaluated),
        nearest_class=int(nearest),
        protocol=protocol,
        n_per_side=attack.n_per_side,
        n_evaluated=int(len(evaluated)),
        max_per_side=max_per_side,
        seed=seed,
        attack_heldout_balanced_accuracy=attack.heldout_balanced_accuracy,
        attack_heldout_auc=attack.heldout_auc,
    )
