"""U-LIRA: the signal, the moderated per-sample Gaussians, the balanced accuracy over target pairs (leave-one-pair
-out), and on real digits models the ordering the attack exists to show: retrained ~50%, original far from it,
RWFT between."""

import math

import numpy as np
import pytest
from metric_helpers import assert_json_ready, random_probs, softmax

from fastforget import api
from fastforget.config import load_config
from fastforget.data import load_dataset
from fastforget.evaluate import AttackSetup, evaluate
from fastforget.metrics import EvalOptions, logit_confidence, ulira
from fastforget.metrics.ulira import moderated_gaussian
from fastforget.runtime import resolve_device
from fastforget.train import train_model


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
    masked = logit_confidence(np.array([[-np.inf, 1.0, 2.0]]), np.array([0]), from_logits=True)[0]
    assert np.isfinite(masked) and masked < -500  # RW-mask's forget logit: far below any trained model's


def test_moderated_variance_is_pooled_with_few_models_and_per_sample_with_many(rng):
    signals = rng.normal(0, rng.uniform(0.5, 3.0, 50), size=(3, 50))
    mean, variance = moderated_gaussian(signals, prior_df=2.0)
    s2 = signals.var(0, ddof=1)
    assert mean == pytest.approx(signals.mean(0))
    assert variance == pytest.approx((2.0 * s2.mean() + 2 * s2) / 4.0)
    two = signals[:2]
    s2_two = two.var(0, ddof=1)
    assert moderated_gaussian(two, prior_df=1e9)[1] == pytest.approx(np.full(50, s2_two.mean()), rel=1e-6)
    assert moderated_gaussian(two, prior_df=0.0)[1] == pytest.approx(s2_two)
    assert moderated_gaussian(np.zeros((4, 5)), prior_df=2.0)[1].min() > 0  # a floor where nothing varies


def test_ulira_catches_distinguishable_models_and_reports_the_target_pair(rng):
    num_pairs, num_samples, num_classes = 4, 60, 10
    labels = rng.integers(0, num_classes, num_samples)
    centre = rng.normal(-5, 1, num_samples)  # per-sample difficulty, shared by both kinds of model

    def models(shift: float, count: int) -> np.ndarray:
        return shadow_logits(rng, labels, centre + shift + rng.normal(0, 0.3, (count, num_samples)), num_classes)

    unlearned, retrained = models(+2.0, num_pairs), models(-2.0, num_pairs)
    result = ulira(softmax(unlearned), softmax(retrained), labels, target=softmax(models(+2.0, 1)[0]),
                   target_retrained=softmax(models(-2.0, 1)[0]))
    assert result.balanced_accuracy > 97 and result.target_pair_balanced_accuracy > 95
    assert result.balanced_accuracy_ci[0] <= result.balanced_accuracy <= result.balanced_accuracy_ci[1]
    assert (result.n_pairs, result.n_shadow_pairs, result.n_samples) == (num_pairs + 1, num_pairs, num_samples)
    from_logits = ulira(unlearned, retrained, labels, from_logits=True)
    assert from_logits.balanced_accuracy == pytest.approx(result.balanced_accuracy, abs=2.0)
    assert_json_ready(result)


def test_ulira_is_chance_on_identical_distributions(rng):
    num_pairs, num_samples = 8, 200
    labels = rng.integers(0, 4, num_samples)
    centre = rng.normal(-4, 2, num_samples)
    unlearned, retrained = (shadow_logits(rng, labels, centre + rng.normal(0, 1, (num_pairs, num_samples)), 4)
                            for _ in range(2))
    result = ulira(unlearned, retrained, labels, from_logits=True)
    assert abs(result.balanced_accuracy - 50) < 6
    low, high = result.balanced_accuracy_ci
    assert low < 50 < high or abs(result.balanced_accuracy - 50) < 3
    assert result.target_pair_balanced_accuracy is None and result.target_called_unlearned is None


def test_with_two_models_per_fit_the_test_weighs_variances_not_only_means(rng):
    """Two shadow pairs plus the target's own: every fit sees two models of each kind. Unlearned models scatter
    widely around the same per-sample centre as tightly clustered retrained ones: only the variances tell them
    apart (the true likelihood ratio reaches ~92%). The old rule (one model per fit, std floored at 0.01: a
    nearest-mean rule) scored 64% here; the moderated variances recover ~90%."""
    num_samples = 300
    labels = rng.integers(0, 4, num_samples)
    centre = rng.normal(-4, 2, num_samples)

    def models(spread: float, count: int) -> np.ndarray:
        return shadow_logits(rng, labels, centre + rng.normal(0, spread, (count, num_samples)), 4)

    unlearned, retrained = models(4.0, 3), models(0.3, 3)
    result = ulira(unlearned[:2], retrained[:2], labels, target=unlearned[2], target_retrained=retrained[2],
                   from_logits=True)
    assert result.n_pairs == 3 and result.balanced_accuracy > 82


def test_ulira_needs_three_pairs(rng):
    probs = random_probs(rng, 2, 5, 3)
    with pytest.raises(ValueError, match="at least 3 pairs"):
        ulira(probs, probs, np.zeros(5, dtype=int))
    ulira(probs, probs, np.zeros(5, dtype=int), target=probs[0], target_retrained=probs[1])  # 2 + 1 pairs


# --- on real digits models ---------------------------------------------------------------------------------------

QUICK = ["train.epochs=4", "model.width=8", "train.amp=false"]  # bf16 autocast is slower for this CNN on CPU
SHADOWS = 3


@pytest.fixture(scope="module")
def digits_attack(tmp_path_factory):
    cfg = load_config("digits", QUICK)
    dataset = load_dataset("digits")
    original = train_model(cfg, seed=0, dataset=dataset).model
    retrained = train_model(cfg, seed=0, exclude=[3], dataset=dataset).model
    return cfg, dataset, original, retrained, AttackSetup(cfg, tmp_path_factory.mktemp("shadows"))


@pytest.fixture(scope="module")
def digits_ulira(digits_attack) -> dict[str, dict]:
    """U-LIRA of three targets made from the same original: retrained (seed 1), RWFT-2-O, the original itself."""
    cfg, dataset, original, retrained, attack = digits_attack
    device = resolve_device(cfg.train.device)
    scores = {}
    for method in ("retrain", "rwft-2-o", "original"):
        replay = api.method_replay(method, {"batch_size": 16} if method.startswith("rw") else {}, cfg, dataset, [3],
                                   device)
        results, skipped = evaluate(replay(original, 1), dataset, [3], retrained=[retrained],
                                    options=EvalOptions(metrics=("ulira",), settings={"shadows": SHADOWS}),
                                    attack=attack.for_method(replay), method=method)
        assert skipped == {}
        scores[method] = results
    return scores


@pytest.mark.parametrize("method, low, high", [("retrain", 35, 65), ("original", 90, 100)])
def test_ulira_on_digits_is_chance_for_retraining_and_far_from_it_for_the_original(digits_ulira, method, low,
                                                                                  high):
    results = digits_ulira[method]
    assert low <= results["ulira"] <= high
    assert results["ulira_pairs"] == SHADOWS + 1 and results["ulira_samples"] == 128  # every training 3
    assert results["ulira_ci"][0] <= results["ulira"] <= results["ulira_ci"][1]


def test_ulira_on_digits_places_rwft_between_retraining_and_the_original(digits_ulira):
    scores = {method: results["ulira"] for method, results in digits_ulira.items()}
    assert scores["retrain"] < scores["rwft-2-o"] < scores["original"], scores
