"""MIA-NN: the nearest class by hand count, both protocols scoring the forget class, with intervals."""

import numpy as np
import pytest
import torch
from metric_helpers import assert_json_ready, probs_with, random_probs

from fastforget.metrics import mia_nn, nearest_class


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
    assert result.score_ci[0] <= result.score <= result.score_ci[1]
    assert result.nearest_class == nearest and result.protocol == "section3" and result.informative
    assert (result.n_per_side, result.n_evaluated) == (150, 120)
    assert_json_ready(result)


@pytest.mark.parametrize("forget_train_p_n, expected", [((0.6, 0.95), 0.0), ((0.0, 0.1), 1.0)])
def test_mia_nn_appendix_protocol_scores_the_forgotten_training_samples(rng, forget_train_p_n, expected):
    """Members: D_train_r without n (low p_n); non-members: test samples of n (high p_n); scored on D_train_f.
    Forget samples reassigned to n (high p_n, like a retrained model's) escape the attack; forget samples that
    still look like the retained training set are caught. The old protocol scored class n's training samples,
    never class f, and gave 1.0 for every model."""
    probs_test, labels_test, forget, nearest = section3_split(rng, (0.0, 0.1))
    labels_train = np.r_[rng.choice([0, 2, 3, 5], 400), np.full(100, nearest), np.full(80, forget)]
    p_n = np.r_[rng.uniform(0.0, 0.1, 400), rng.uniform(0.6, 0.95, 100), rng.uniform(*forget_train_p_n, 80)]
    probs_train = probs_with(rng, nearest, p_n, 6)
    result = mia_nn(probs_test, labels_test, forget, nearest, protocol="appendix", probs_train=probs_train,
                    labels_train=labels_train)
    assert result.score == pytest.approx(expected, abs=0.05)
    assert (result.n_per_side, result.n_evaluated) == (150, 80)  # members 400 > non-members 150 (test n)


def test_mia_nn_rejects_a_forget_class_as_nearest(rng):
    probs, labels, forget, _ = section3_split(rng, (0.0, 0.1))
    with pytest.raises(ValueError, match="retained"):
        mia_nn(probs, labels, forget, forget)
    with pytest.raises(ValueError, match="probs_train"):
        mia_nn(probs, labels, forget, 4, protocol="appendix")
