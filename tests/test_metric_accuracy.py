"""ACC_r / ACC_f against a hand count, with bootstrap intervals that bracket the value."""

import numpy as np
import pytest
import torch
from metric_helpers import assert_json_ready, random_probs

from fastforget.errors import UnknownClassError
from fastforget.metrics import accuracy, mia


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


def test_accuracy_intervals_are_the_binomial_spread_of_the_split(rng):
    """A 95% bootstrap interval of a proportion p over n samples spans about 2 * 1.96 * sqrt(p (1 - p) / n)."""
    labels = rng.integers(0, 4, 4000)
    probs = np.eye(4)[np.where(rng.random(4000) < 0.8, labels, (labels + 1) % 4)]  # 80% right
    result = accuracy(probs, labels, [3], seed=5)
    for value, interval, n in ((result.acc_r, result.acc_r_ci, result.n_r), (result.acc_f, result.acc_f_ci,
                                                                            result.n_f)):
        assert interval[0] < value < interval[1]
        expected = 2 * 1.96 * 100 * np.sqrt(value / 100 * (1 - value / 100) / n)
        assert interval[1] - interval[0] == pytest.approx(expected, rel=0.2)
    assert accuracy(probs, labels, [3], seed=5) == result  # seeded: the same interval again


def test_accuracy_without_forget_samples_gives_none(rng):
    probs = random_probs(rng, 30, 5)
    labels = rng.integers(0, 4, 30)  # class 4 never occurs
    result = accuracy(probs, labels, 4)
    assert result.acc_f is None and result.acc_f_ci is None and result.n_f == 0 and result.per_class[4] is None


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
