"""The SVM membership attack: scores by what the forget set looks like, the attack's own quality, and the mark of an
attack that cannot tell members apart."""

import math

import numpy as np
import pytest
from metric_helpers import assert_json_ready, probs_with, random_probs

from fastforget.metrics import membership_feature, mia
from fastforget.metrics.mia import svm_classifier


def test_mia_svm_is_the_papers():
    params = svm_classifier().get_params()
    assert (params["kernel"], params["C"], params["gamma"]) == ("rbf", 3.0, "auto")


@pytest.mark.parametrize("forget_like, expected", [("nonmembers", 100.0), ("members", 0.0)])
def test_mia_scores_forget_set_by_what_it_looks_like(rng, forget_like, expected):
    num_classes, forget = 5, 3
    labels_train = np.r_[rng.choice([0, 1, 2, 4], 600), np.full(200, forget)]
    labels_test = rng.choice([0, 1, 2, 4], 300)
    member_confidence = rng.uniform(0.97, 1.0, 800)
    if forget_like == "nonmembers":
        member_confidence[600:] = rng.uniform(0.3, 0.7, 200)
    probs_train = probs_with(rng, labels_train, member_confidence, num_classes)
    probs_test = probs_with(rng, labels_test, rng.uniform(0.3, 0.7, 300), num_classes)

    result = mia(probs_train, labels_train, probs_test, labels_test, [forget], max_per_side=250, seed=3)
    assert result.score == pytest.approx(expected, abs=5.0)
    assert result.score_ci[0] <= result.score <= result.score_ci[1]
    assert result.n_per_side == 250 and result.n_forget == 200  # 600 and 300 retained, capped at 250
    assert result.attack_heldout_balanced_accuracy > 95 and result.attack_heldout_auc > 0.99
    assert result.informative and result.attack_null_band[1] < 0.7
    assert_json_ready(result)


def test_an_attack_that_cannot_tell_members_apart_is_marked_uninformative(rng):
    """Members and non-members drawn alike: whatever the score says, the attack is at chance and says so."""
    labels_train, labels_test = rng.integers(0, 4, 1500), rng.integers(0, 4, 1500)
    probs_train, probs_test = random_probs(rng, 1500, 4), random_probs(rng, 1500, 4)
    result = mia(probs_train, labels_train, probs_test, labels_test, [3], max_per_side=1200)
    assert abs(result.attack_heldout_auc - 0.5) < 0.12
    assert abs(result.attack_heldout_balanced_accuracy - 50) < 12
    low, high = result.attack_null_band
    assert low < 0.5 < high and high - low == pytest.approx(2 * 2.576 / math.sqrt(6 * 300), rel=0.25)
    assert not result.informative


def test_mia_is_seeded(rng):
    probs, labels = random_probs(rng, 400, 4), rng.integers(0, 4, 400)
    runs = [mia(probs, labels, probs[::-1], labels[::-1], [0], max_per_side=50, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]


def test_membership_features_match_their_definitions(rng):
    probs, labels = random_probs(rng, 23, 6), rng.integers(0, 6, 23)
    probs[0] = np.eye(6)[labels[0]]  # a one-hot row: logs of 0 must stay finite
    for feature in ("confidence", "entropy", "modified_entropy"):
        values = membership_feature(probs, labels, feature)
        for row, label, value in zip(probs, labels, values, strict=True):
            def log(p):
                return math.log(max(p, 1e-38))

            expected = {
                "confidence": row[label],
                "entropy": -sum(p * log(p) for p in row),
                "modified_entropy": -(1 - row[label]) * log(row[label])
                - sum(p * log(1 - p) for k, p in enumerate(row) if k != label),
            }[feature]
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
