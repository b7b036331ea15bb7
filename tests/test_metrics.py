"""Metrics against independent oracles (plain loops, numpy, scikit-learn) on fresh random model outputs.

Each test draws a new seed (printed, so a failure can be replayed); statistical thresholds hold by a wide margin.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from fastforget.errors import UnknownClassError
from fastforget.metrics import (
    accuracy,
    confusion_matrix,
    logit_confidence,
    membership_feature,
    mia,
    mia_nn,
    nearest_class,
    reassignment,
    rmia,
    rmia_scores,
    target_utv,
    ulira,
    utv,
)
from fastforget.metrics.mia import svm_classifier
from fastforget.metrics.plots import plot_confusion_matrices, plot_reassignment
from fastforget.metrics.rmia import marginal_probability, membership_separation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"{request.node.name}: numpy seed {seed}")
    return np.random.default_rng(seed)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def random_probs(rng: np.random.Generator, *shape: int, scale: float = 2.0) -> np.ndarray:
    return softmax(scale * rng.standard_normal(shape))


def probs_with(rng: np.random.Generator, columns: np.ndarray | int, values: np.ndarray,
               num_classes: int) -> np.ndarray:
    """Rows whose probability of `columns` (one per row, or one for all) is `values`; the rest of the mass spread
    at random over the other classes."""
    is_column = np.eye(num_classes, dtype=bool)[np.broadcast_to(columns, values.shape)]
    probs = np.zeros((len(values), num_classes))
    probs[is_column] = values
    probs[~is_column] = (rng.dirichlet(np.ones(num_classes - 1), len(values)) * (1.0 - values)[:, None]).ravel()
    return probs


def assert_json_ready(result: object) -> None:
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict


# accuracy ------------------------------------------------------------------------------------------------------


def test_accuracy_matches_a_hand_count(rng):
    num_classes, forget = 7, [2, 5]
    probs = random_probs(rng, 137, num_classes)
    labels = rng.integers(0, num_classes, 137)
    hits = {"r": [0, 0], "f": [0, 0]}
    per_class = [[0, 0] for _ in range(num_classes)]
    for row, label in zip(probs, labels, strict=True):
        correct = int(max(range(num_classes), key=lambda k: row[k]) == label)
        hits["f" if label in forget else "r"][0] += correct
        hits["f" if label in forget else "r"][1] += 1
        per_class[label][0] += correct
        per_class[label][1] += 1

    result = accuracy(torch.from_numpy(probs).float(), torch.from_numpy(labels), forget)
    assert result.acc_r == pytest.approx(100 * hits["r"][0] / hits["r"][1])
    assert result.acc_f == pytest.approx(100 * hits["f"][0] / hits["f"][1])
    assert (result.n_r, result.n_f) == (hits["r"][1], hits["f"][1])
    assert result.per_class == pytest.approx([100 * h / n if n else None for h, n in per_class])
    assert_json_ready(result)


def test_accuracy_without_forget_samples_gives_none(rng):
    probs = random_probs(rng, 30, 5)
    labels = rng.integers(0, 4, 30)  # class 4 never occurs
    result = accuracy(probs, labels, 4)
    assert result.acc_f is None and result.n_f == 0 and result.per_class[4] is None


def test_bad_inputs_are_named(rng):
    probs = random_probs(rng, 20, 4)
    with pytest.raises(UnknownClassError, match="outside"):
        accuracy(probs, np.full(20, 4), [1])
    with pytest.raises(UnknownClassError, match="forget"):
        accuracy(probs, np.zeros(20, dtype=int), [9])
    with pytest.raises(ValueError, match="softmax"):
        mia(np.log(probs), np.zeros(20, dtype=int), probs, np.zeros(20, dtype=int), [1])
    with pytest.raises(ValueError, match="shape"):
        accuracy(probs, np.zeros(19, dtype=int), [1])
    with pytest.raises(ValueError, match="retained"):
        accuracy(probs, np.zeros(20, dtype=int), [0, 1, 2, 3])


# MIA -----------------------------------------------------------------------------------------------------------


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
    assert result.n_per_side == 250 and result.n_forget == 200  # 600 and 300 retained, capped at 250
    assert result.attack_heldout_balanced_accuracy > 95 and result.attack_heldout_auc > 0.99
    assert_json_ready(result)


def test_mia_attack_quality_is_chance_when_members_look_like_nonmembers(rng):
    labels_train, labels_test = rng.integers(0, 4, 1500), rng.integers(0, 4, 1500)
    probs_train, probs_test = random_probs(rng, 1500, 4), random_probs(rng, 1500, 4)
    result = mia(probs_train, labels_train, probs_test, labels_test, [3], max_per_side=1200)
    assert abs(result.attack_heldout_auc - 0.5) < 0.12
    assert abs(result.attack_heldout_balanced_accuracy - 50) < 12


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


# MIA-NN --------------------------------------------------------------------------------------------------------


def test_nearest_class_matches_a_hand_count(rng):
    num_classes, forget = 9, [4, 7]
    probs = random_probs(rng, 101, num_classes, scale=1.0)
    probs[:, 4] += 3.0  # the forget class dominates every row: only the masking can make the answer right
    probs /= probs.sum(1, keepdims=True)
    retained = [k for k in range(num_classes) if k not in forget]
    votes = np.bincount([retained[int(np.argmax(row[retained]))] for row in probs], minlength=num_classes)
    assert nearest_class(probs, forget) == int(np.argmax(votes))
    mean = probs.mean(0)
    assert nearest_class(probs, forget, "highest_mean") == max(retained, key=lambda k: mean[k])


def section3_split(rng: np.random.Generator, forget_p_n: tuple[float, float]):
    """Test split with K=6, forget class 1, nearest class 4: class-4 samples give p_4 in [0.6, 0.95]."""
    num_classes, forget, nearest = 6, 1, 4
    labels = np.r_[np.full(150, nearest), rng.choice([0, 2, 3, 5], 450), np.full(120, forget)]
    p_n = np.r_[rng.uniform(0.6, 0.95, 150), rng.uniform(0.0, 0.1, 450), rng.uniform(*forget_p_n, 120)]
    return probs_with(rng, nearest, p_n, num_classes), labels, forget, nearest


@pytest.mark.parametrize("forget_p_n, expected", [((0.6, 0.95), 0.0), ((0.0, 0.1), 1.0)])
def test_mia_nn_is_low_when_forget_samples_go_to_the_nearest_class(rng, forget_p_n, expected):
    probs, labels, forget, nearest = section3_split(rng, forget_p_n)
    result = mia_nn(torch.from_numpy(probs), labels, [forget], nearest)
    assert result.score == pytest.approx(expected, abs=0.05)  # a fraction, as in the paper's Table 1
    assert result.nearest_class == nearest and result.protocol == "section3"
    assert (result.n_per_side, result.n_evaluated) == (150, 120)
    assert_json_ready(result)


@pytest.mark.parametrize("train_n_p_n, expected", [((0.6, 0.95), 1.0), ((0.0, 0.1), 0.0)])
def test_mia_nn_appendix_protocol_uses_its_own_sets(rng, train_n_p_n, expected):
    probs_test, labels_test, forget, nearest = section3_split(rng, (0.0, 0.1))
    labels_train = np.r_[rng.choice([0, 2, 3, 5], 400), np.full(100, nearest), np.full(80, forget)]
    p_n = np.r_[rng.uniform(0.0, 0.1, 400), rng.uniform(*train_n_p_n, 100), rng.uniform(0.0, 1.0, 80)]
    probs_train = probs_with(rng, nearest, p_n, 6)
    result = mia_nn(probs_test, labels_test, forget, nearest, protocol="appendix", probs_train=probs_train,
                    labels_train=labels_train)
    assert result.score == pytest.approx(expected, abs=0.05)
    assert (result.n_per_side, result.n_evaluated) == (150, 100)  # members 400 > non-members 150 (test n)


def test_mia_nn_rejects_a_forget_class_as_nearest(rng):
    probs, labels, forget, _ = section3_split(rng, (0.0, 0.1))
    with pytest.raises(ValueError, match="retained"):
        mia_nn(probs, labels, forget, forget)
    with pytest.raises(ValueError, match="probs_train"):
        mia_nn(probs, labels, forget, 4, protocol="appendix")


# UTV -----------------------------------------------------------------------------------------------------------


def numpy_tv(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.mean(0.5 * np.abs(p - q).sum(-1)))


def test_utv_of_identical_models_is_zero_and_of_disjoint_one_hots_is_one(rng):
    probs = random_probs(rng, 31, 5)
    same = utv(probs, [probs, probs.copy()])
    assert same.utv == pytest.approx(0.0, abs=1e-12) and same.floor == pytest.approx(0.0, abs=1e-12)
    predictions = rng.integers(0, 5, 31)
    disjoint = utv(np.eye(5)[predictions], np.eye(5)[(predictions + rng.integers(1, 5, 31)) % 5])
    assert disjoint.utv == pytest.approx(1.0) and disjoint.floor is None


def test_utv_and_floor_match_numpy(rng):
    num_samples, num_classes = 53, 11
    unlearned = random_probs(rng, num_samples, num_classes)
    retrained = [random_probs(rng, num_samples, num_classes) for _ in range(3)]
    result = utv(torch.from_numpy(unlearned).float(), retrained)
    expected = [numpy_tv(r, unlearned) for r in retrained]
    assert result.utv_per_retrained == pytest.approx(expected, abs=1e-6)
    assert result.utv == pytest.approx(expected[0], abs=1e-6)
    assert result.utv_mean == pytest.approx(np.mean(expected), abs=1e-6)
    pairs = [numpy_tv(retrained[0], retrained[1]), numpy_tv(retrained[0], retrained[2]),
             numpy_tv(retrained[1], retrained[2])]
    assert result.floor == pytest.approx(sum(pairs) / 3, abs=1e-9)
    assert (result.n_samples, result.n_retrained) == (num_samples, 3)
    stacked = utv(unlearned, np.stack(retrained))
    assert stacked.utv_per_retrained == pytest.approx(expected, abs=1e-12)
    assert_json_ready(result)


def test_utv_from_logits_matches_numpy(rng):
    logits_unlearned, logits_retrained = rng.normal(size=(17, 3)) * 3, rng.normal(size=(17, 3)) * 3
    result = utv(logits_unlearned, logits_retrained, from_logits=True)
    assert result.utv == pytest.approx(numpy_tv(softmax(logits_unlearned), softmax(logits_retrained)), abs=1e-12)


def test_target_utv_matches_a_numpy_target(rng):
    num_classes, forget = 8, [2, 6]
    logits = rng.normal(size=(29, num_classes)) * 4
    logits[:, 2] += 30.0  # confident on a forget class: p / (1 - p_f) would divide by ~0 here
    retrained = random_probs(rng, 29, num_classes)
    masked = logits.copy()
    masked[:, forget] = -np.inf
    result = target_utv(logits, retrained, forget)
    assert result.utv == pytest.approx(numpy_tv(softmax(masked), retrained), abs=1e-12)


def test_utv_rejects_mismatched_models(rng):
    with pytest.raises(ValueError, match="same N samples"):
        utv(random_probs(rng, 10, 4), random_probs(rng, 11, 4))
    with pytest.raises(ValueError, match="different shapes"):
        utv(random_probs(rng, 10, 4), [random_probs(rng, 10, 4), random_probs(rng, 9, 4)])


# U-LIRA --------------------------------------------------------------------------------------------------------


def shadow_logits(rng: np.random.Generator, labels: np.ndarray, signal: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits [..., S, K] whose true-class logit-scaled confidence is exactly `signal` [..., S]."""
    logits = rng.normal(size=(*signal.shape, num_classes))
    is_true = np.eye(num_classes, dtype=bool)[labels]
    others = np.log(np.where(is_true, 0.0, np.exp(logits)).sum(-1))
    return np.where(is_true, (signal + others)[..., None], logits)


def test_logit_confidence_matches_its_definition(rng):
    labels = rng.integers(0, 5, 40)
    signal = rng.normal(0, 4, size=(3, 40))
    logits = shadow_logits(rng, labels, signal, 5)
    assert logit_confidence(logits, labels, from_logits=True) == pytest.approx(signal, abs=1e-9)
    assert logit_confidence(softmax(logits), labels, from_logits=False) == pytest.approx(signal, abs=1e-6)
    confident = np.array([[50.0, 0.0, 0.0]])  # p_y rounds to 1 in float32 and float64
    assert logit_confidence(confident, np.array([0]), from_logits=True)[0] == pytest.approx(50 - math.log(2))
    saturated = logit_confidence(np.array([[1.0, 0.0, 0.0]]), np.array([0]), from_logits=False)[0]
    assert np.isfinite(saturated) and saturated > 80


def test_ulira_separates_distinguishable_shadows(rng):
    num_pairs, num_samples, num_classes = 4, 60, 10
    labels = rng.integers(0, num_classes, num_samples)
    centre = rng.normal(-5, 1, num_samples)  # per-sample difficulty, shared by both kinds of model

    def models(shift: float, count: int) -> np.ndarray:
        return shadow_logits(rng, labels, centre + shift + rng.normal(0, 0.3, (count, num_samples)), num_classes)

    unlearned, retrained = models(+2.0, num_pairs), models(-2.0, num_pairs)
    result = ulira(softmax(unlearned), softmax(retrained), labels, target=softmax(models(+2.0, 1)[0]),
                   target_retrained=softmax(models(-2.0, 1)[0]))
    assert result.balanced_accuracy > 97
    assert result.target_accuracy > 95 and result.target_balanced_accuracy > 95
    assert (result.n_pairs, result.n_samples) == (num_pairs, num_samples)
    from_logits = ulira(unlearned, retrained, labels, from_logits=True)
    assert from_logits.balanced_accuracy == pytest.approx(result.balanced_accuracy, abs=1.0)
    assert_json_ready(result)


def test_ulira_is_chance_on_identical_distributions(rng):
    num_pairs, num_samples = 8, 200
    labels = rng.integers(0, 4, num_samples)
    centre = rng.normal(-4, 2, num_samples)
    unlearned, retrained = (shadow_logits(rng, labels, centre + rng.normal(0, 1, (num_pairs, num_samples)), 4)
                            for _ in range(2))
    result = ulira(unlearned, retrained, labels, from_logits=True)
    assert abs(result.balanced_accuracy - 50) < 6
    assert result.target_accuracy is None and result.target_balanced_accuracy is None


def test_ulira_needs_two_pairs(rng):
    probs = random_probs(rng, 1, 5, 3)
    with pytest.raises(ValueError, match="at least 2 shadow pairs"):
        ulira(probs, probs, np.zeros(5, dtype=int))


# RMIA ----------------------------------------------------------------------------------------------------------


def test_offline_marginal_is_the_papers_approximation(rng):
    reference = rng.uniform(0, 1, (4, 9))
    is_in = np.zeros((4, 9), dtype=bool)
    is_in[0] = True  # model 0 trained on every sample: only models 1-3 count
    expected = 0.5 * ((1 + 0.3) * reference[1:].mean(0) + (1 - 0.3))
    assert marginal_probability(reference, is_in, mode="offline", a=0.3) == pytest.approx(expected)
    online = 0.5 * (reference[0] + reference[1:].mean(0))
    assert marginal_probability(reference, is_in, mode="online", a=0.3) == pytest.approx(online)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_rmia_scores_match_a_brute_force_count(rng, mode):
    num_refs, n, m, a, gamma = 4, 30, 41, 0.4, 1.3
    target_x, reference_x = rng.uniform(0, 1, n), rng.uniform(0, 1, (num_refs, n))
    target_z, reference_z = rng.uniform(0, 1, m), rng.uniform(0, 1, (num_refs, m))
    in_x = rng.random((num_refs, n)) < 0.5
    in_x[rng.integers(0, num_refs, n), np.arange(n)] = False  # at least one OUT model per sample
    in_z = np.zeros((num_refs, m), dtype=bool)

    def marginal(reference, is_in, j):
        out = [reference[r, j] for r in range(num_refs) if not is_in[r, j]]
        inside = [reference[r, j] for r in range(num_refs) if is_in[r, j]]
        p_out = sum(out) / len(out)
        p_in = sum(inside) / len(inside) if mode == "online" and inside else a * p_out + 1 - a
        return (p_in + p_out) / 2

    expected = []
    for i in range(n):
        ratio_x = target_x[i] / marginal(reference_x, in_x, i)
        expected.append(sum(ratio_x / (target_z[j] / marginal(reference_z, in_z, j)) >= gamma
                            for j in range(m)) / m)
    scores = rmia_scores(target_x, reference_x, target_z, reference_z, reference_in_x=in_x,
                         reference_in_z=in_z, mode=mode, a=a, gamma=gamma)
    assert scores == pytest.approx(expected)


def rmia_setting(rng: np.random.Generator, member_confidence: tuple[float, float]):
    """Target and 4 reference models on 400 training + 400 unseen samples (K=5, forget class 0), population 300."""
    num_classes, num_refs, n, m = 5, 4, 800, 300
    labels_x, labels_z = rng.integers(0, num_classes, n), rng.integers(0, num_classes, m)
    members = np.arange(n) < 400
    target_conf = np.where(members, rng.uniform(*member_confidence, n), rng.uniform(0.3, 0.8, n))
    target_x = probs_with(rng, labels_x, target_conf, num_classes)
    reference_x = np.stack([probs_with(rng, labels_x, rng.uniform(0.3, 0.8, n), num_classes)
                            for _ in range(num_refs)])
    target_z = probs_with(rng, labels_z, rng.uniform(0.3, 0.8, m), num_classes)
    reference_z = np.stack([probs_with(rng, labels_z, rng.uniform(0.3, 0.8, m), num_classes)
                            for _ in range(num_refs)])
    return dict(target_x=target_x, labels_x=labels_x, members_x=members, reference_x=reference_x,
                target_z=target_z, labels_z=labels_z, reference_z=reference_z, forget=[0])


def test_rmia_detects_overconfident_members(rng):
    result = rmia(**rmia_setting(rng, (0.9, 1.0)))
    assert result.forget.auc > 0.9 and result.retain.auc > 0.9
    assert result.forget.n_members + result.retain.n_members == 400
    assert_json_ready(result)


def test_rmia_is_chance_when_members_look_unseen(rng):
    result = rmia(**rmia_setting(rng, (0.3, 0.8)), mode="online")
    assert abs(result.retain.auc - 0.5) < 0.1 and abs(result.forget.auc - 0.5) < 0.2


def test_membership_separation_matches_a_threshold_sweep(rng):
    members = rng.random(500) < 0.3
    scores = np.round(rng.normal(members * 1.5, 1.0), 1)  # rounded: ties as with RMIA's fractions of z
    separation = membership_separation(scores, members)
    pairs = [(m, n) for m in scores[members] for n in scores[~members]]
    assert separation.auc == pytest.approx(np.mean([1.0 if m > n else 0.5 if m == n else 0.0 for m, n in pairs]))
    best_tpr = max(np.mean(scores[members] >= t) for t in np.unique(np.r_[scores, np.inf])
                   if np.mean(scores[~members] >= t) <= 0.01)
    assert separation.tpr_at_1pct_fpr == pytest.approx(best_tpr)
    assert (separation.n_members, separation.n_nonmembers) == (members.sum(), (~members).sum())


def test_rmia_needs_an_out_model_per_sample(rng):
    setting = rmia_setting(rng, (0.9, 1.0))
    with pytest.raises(ValueError, match="no OUT reference model"):
        rmia(**setting, reference_in_x=np.ones((4, 800), dtype=bool))


# Reassignment and plots ----------------------------------------------------------------------------------------


def test_confusion_matrix_matches_sklearn(rng):
    labels, predictions = rng.integers(0, 13, 300), rng.integers(0, 13, 300)
    expected = sklearn_confusion_matrix(labels, predictions, labels=range(13))
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 13), expected)


def test_reassignment_shares_and_accuracy_drop_match_a_hand_count(rng):
    num_classes, forget = 6, [1, 3]
    labels = rng.integers(0, num_classes, 250)
    probs, probs_original = random_probs(rng, 250, num_classes), random_probs(rng, 250, num_classes)
    result = reassignment(probs, labels, forget, probs_original=probs_original)
    predictions, original = probs.argmax(1), probs_original.argmax(1)

    assert [entry.forget_class for entry in result.reassigned] == forget
    for entry in result.reassigned:
        counts = Counter(int(p) for p, y in zip(predictions, labels, strict=True) if y == entry.forget_class)
        assert entry.n_samples == sum(counts.values())
        assert {s.class_index: s.share for s in entry.shares} == pytest.approx(
            {c: k / entry.n_samples for c, k in counts.items()})
        assert sum(s.share for s in entry.shares) == pytest.approx(1.0)
        assert [s.share for s in entry.shares] == sorted((s.share for s in entry.shares), reverse=True)

    def class_accuracy(preds, c):
        return 100 * np.mean(preds[labels == c] == c)

    drops = {c: class_accuracy(original, c) - class_accuracy(predictions, c)
             for c in range(num_classes) if c not in forget}
    assert {d.class_index: d.drop for d in result.accuracy_drop} == pytest.approx(drops)
    assert [d.drop for d in result.accuracy_drop] == pytest.approx(sorted(drops.values(), reverse=True))
    assert np.array(result.confusion).sum() == 250
    assert_json_ready(result)


@pytest.mark.parametrize("num_classes, names", [(7, [f"class {i}" for i in range(7)]), (30, None)])
def test_plots_write_readable_pngs(rng, tmp_path, num_classes, names):
    labels = rng.integers(0, num_classes, 400)
    models = {title: random_probs(rng, 400, num_classes) for title in ("original", "unlearned", "retrained")}
    matrices = {title: confusion_matrix(labels, probs.argmax(1), num_classes) for title, probs in models.items()}
    paths = [
        plot_confusion_matrices(matrices, tmp_path / "all.png", class_names=names),
        plot_confusion_matrices({"unlearned": matrices["unlearned"]}, tmp_path / "one.png", class_names=names),
        plot_reassignment(reassignment(models["unlearned"], labels, [2]).reassigned[0], tmp_path / "bars.png",
                          class_names=names, top=5),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.png", "bars.png", "one.png"]  # no temp files left


def test_confusion_plot_rejects_mismatched_matrices(tmp_path):
    with pytest.raises(ValueError, match="every matrix"):
        plot_confusion_matrices({"a": np.eye(3), "b": np.eye(4)}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_every_result_serialises(rng):
    """One pass over all metrics on the same model outputs: nothing returns numpy scalars or NaN."""
    probs = random_probs(rng, 300, 4)
    labels = rng.integers(0, 4, 300)
    results = [accuracy(probs, labels, 1), mia(probs, labels, probs[::-1], labels[::-1], 1),
               mia_nn(probs, labels, 1, nearest_class(probs[labels == 1], 1)),
               utv(probs, [probs[::-1], probs]), reassignment(probs, labels, 1)]
    for result in results:
        assert_json_ready(result)
