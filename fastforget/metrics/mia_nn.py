"""MIA-NN, the paper's attack through the nearest retained class (its Table 1, section 3.2 and appendix A.1).

A model retrained without class f sends f's samples to a similar retained class n (automobile -> truck). An
unlearned model that only suppresses f, and sends its samples elsewhere, gives itself away on class n.

Both protocols use the model's probability of class n as the feature and the MIA's SVM (RBF, C=3,
gamma="auto"; balanced by subsampling the larger side, each side capped at `max_per_side`, seeded), and both
score the attack's success on the forget class: the FRACTION (not percent) of its samples on which it sees that
they were not reassigned to n. Lower is better; a retrained model scores near 0.

Protocol "section3" (the default, Table 1): members (1) = test samples of class n, non-members (0) = test samples
outside F and n; evaluated on D_test_f, score = fraction called non-member (not like n).

Protocol "appendix" (A.1's second list): members = D_train_r without class n, non-members = the test samples of
n; evaluated on the forgotten class's training samples D_train_f (the text says "forgotten truck samples from the
training set", which cannot be meant: truck is retained, and scoring class n never involves f, so every model
scored 1.0), score = fraction called member: D_train_f samples whose p_n looks like the retained training set's
rather than like class n's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fastforget.metrics._common import ArrayLike, MetricResult, as_forget, as_labels, as_outputs, check_same_classes
from fastforget.metrics.intervals import Interval, bootstrap_mean
from fastforget.metrics.mia import MAX_PER_SIDE, fit_membership_svm
from fastforget.metrics.registry import Column, EvalContext, Skip, register

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
    score: float  # FRACTION of the evaluated forget samples on which the attack succeeds
    score_ci: Interval  # bootstrap over the evaluated samples (the fitted attack held fixed)
    informative: bool  # False: the attack cannot tell its own two sets apart
    nearest_class: int
    protocol: str
    n_per_side: int
    n_evaluated: int
    max_per_side: int
    seed: int
    attack_heldout_balanced_accuracy: float  # percent
    attack_heldout_auc: float
    attack_null_band: Interval


def mia_nn(probs_test: ArrayLike, labels_test: ArrayLike, forget: int | Iterable[int], nearest: int, *,
           protocol: Protocol = "section3", probs_train: ArrayLike | None = None,
           labels_train: ArrayLike | None = None, max_per_side: int = MAX_PER_SIDE, seed: int = 0,
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
        evaluated = train_feature[np.isin(labels_train, forget)]
    else:
        raise ValueError(f"unknown MIA-NN protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if len(evaluated) == 0:
        raise ValueError(f"protocol {protocol!r} has no forget sample to evaluate: the split lacks the forget classes")
    attack = fit_membership_svm(members, nonmembers, max_per_side=max_per_side, seed=seed,
                                heldout_fraction=heldout_fraction)
    nonmember = attack.nonmember_calls(evaluated)
    # section3: called non-member (unlike class n); appendix: called member (like the retained training set)
    successes = nonmember if protocol == "section3" else 1.0 - nonmember
    return MIANNResult(
        score=float(successes.mean()),
        score_ci=bootstrap_mean(successes, seed=seed),
        informative=attack.informative,
        nearest_class=int(nearest),
        protocol=protocol,
        n_per_side=attack.n_per_side,
        n_evaluated=int(len(evaluated)),
        max_per_side=max_per_side,
        seed=seed,
        attack_heldout_balanced_accuracy=attack.heldout_balanced_accuracy,
        attack_heldout_auc=attack.heldout_auc,
        attack_null_band=attack.heldout_null_band,
    )


def _nearest(ctx: EvalContext) -> tuple[int, str]:
    """MIA-NN's class n: given, else the retrained model's most predicted, else the original's highest mean."""
    given = ctx.setting("nearest")
    if given is not None:
        return int(given), "given"
    if ctx.retrained:
        return nearest_class(ctx.retrained[0].test_probs[ctx.splits.test_f], ctx.forget), "retrained"
    if ctx.original is not None:
        return nearest_class(ctx.original.test_probs[ctx.splits.test_f], ctx.forget, mode="highest_mean"), "original"
    raise Skip("needs the nearest class: give --retrained, --original or --nearest")


def _notes(results: dict, classes: list[str]) -> list[tuple[str, str]]:
    return [("  MIA-NN class", f"{results['mia_nn_class_name']} (from {results['mia_nn_class_from']}, "
                               f"protocol {results['mia_nn_protocol']})")]


@register("mia_nn", summary="the paper's nearest-class attack (Table 1): fraction of forget samples not "
                            "reassigned like the nearest retained class",
          table="table1_mia_nn", title="Table 1 form: MIA-NN",
          columns=[Column("mia_nn", "MIA-NN", "lower", decimals=4, informative="mia_nn_informative",
                          evidence="mia_nn_attack_auc")],
          settings={"nearest": None, "mia_nn_protocol": "section3"}, notes=_notes)
def compute_mia_nn(ctx: EvalContext) -> dict:
    nearest, source = _nearest(ctx)
    m = mia_nn(ctx.target.test_probs, ctx.dataset.test_labels, ctx.forget, nearest,
               protocol=ctx.setting("mia_nn_protocol"), probs_train=ctx.target.train_probs_at(ctx.rows),
               labels_train=ctx.labels_train, max_per_side=ctx.setting("max_per_side"), seed=ctx.seed)
    return {"mia_nn": m.score, "mia_nn_ci": m.score_ci, "mia_nn_informative": m.informative,
            "mia_nn_attack_auc": m.attack_heldout_auc, "mia_nn_attack_null_band": m.attack_null_band,
            "mia_nn_class": nearest, "mia_nn_class_name": ctx.dataset.classes[nearest], "mia_nn_class_from": source,
            "mia_nn_protocol": m.protocol}
