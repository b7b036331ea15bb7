"""UTV against numpy: the value, the floor between retrained models, the RWFT target under both reassignment rules,
their intervals, and the one batched `kernels.tv_distance` call that keeps the computation on the device."""

import importlib

import numpy as np
import pytest
import torch
from metric_helpers import assert_json_ready, random_probs, softmax

from fastforget.metrics import target_utv, utv

utv_module = importlib.import_module("fastforget.metrics.utv")  # the package's `utv` is the function


def numpy_tv(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.mean(0.5 * np.abs(p - q).sum(-1)))


def test_utv_of_identical_models_is_zero_and_of_disjoint_one_hots_is_one(rng):
    probs = random_probs(rng, 31, 5)
    same = utv(probs, [probs, probs.copy()])
    assert same.utv == pytest.approx(0.0, abs=1e-12) and same.floor == pytest.approx(0.0, abs=1e-12)
    predictions = rng.integers(0, 5, 31)
    disjoint = utv(np.eye(5)[predictions], np.eye(5)[(predictions + rng.integers(1, 5, 31)) % 5])
    assert disjoint.utv == pytest.approx(1.0) and disjoint.floor is None and disjoint.floor_ci is None


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
    assert result.floor == pytest.approx(sum(pairs) / 3, abs=1e-6)
    assert (result.n_samples, result.n_retrained) == (num_samples, 3)
    stacked = utv(unlearned, np.stack(retrained))
    assert stacked.utv_per_retrained == pytest.approx(expected, abs=1e-12)
    assert_json_ready(result)


def test_utv_intervals_are_the_bootstrap_over_forget_samples(rng):
    unlearned = random_probs(rng, 400, 6)
    retrained = [random_probs(rng, 400, 6) for _ in range(2)]
    result = utv(unlearned, retrained, seed=3)
    per_sample = 0.5 * np.abs(retrained[0] - unlearned).sum(1)
    loop = np.random.default_rng(0)
    means = [per_sample[loop.integers(0, 400, 400)].mean() for _ in range(3000)]
    assert result.utv_ci == pytest.approx(np.quantile(means, [0.025, 0.975]), abs=0.004)
    floor_per_sample = 0.5 * np.abs(retrained[0] - retrained[1]).sum(1)
    assert result.floor_ci[0] < floor_per_sample.mean() < result.floor_ci[1]


def test_utv_from_logits_matches_numpy_and_a_masked_class_is_fine(rng):
    logits_unlearned, logits_retrained = rng.normal(size=(17, 3)) * 3, rng.normal(size=(17, 3)) * 3
    result = utv(logits_unlearned, logits_retrained, from_logits=True)
    assert result.utv == pytest.approx(numpy_tv(softmax(logits_unlearned), softmax(logits_retrained)), abs=1e-12)
    masked = logits_unlearned.copy()
    masked[:, 1] = -np.inf  # RW-mask's outputs
    expected = softmax(np.where(np.isinf(masked), -1e300, masked))
    assert utv(masked, logits_retrained, from_logits=True).utv == pytest.approx(
        numpy_tv(expected, softmax(logits_retrained)), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        utv(np.full((2, 3), np.nan), logits_retrained[:2], from_logits=True)


@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_target_utv_matches_a_numpy_target(rng, reassign):
    num_classes, forget = 8, [2, 6]
    logits = rng.normal(size=(29, num_classes)) * 4
    logits[:, 2] += 30.0  # confident on a forget class: p / (1 - p_f) would divide by ~0 here
    retrained = random_probs(rng, 29, num_classes)
    p = softmax(logits)
    target = p.copy()
    target[:, forget] = 0.0
    if reassign == "proportional":
        target /= target.sum(1, keepdims=True)
    else:
        target[np.arange(29), target.argmax(1)] += p[:, forget].sum(1)
    result = target_utv(logits, retrained, forget, reassign=reassign)
    assert result.utv == pytest.approx(numpy_tv(target, retrained), abs=1e-9)


def test_all_retrained_models_go_through_one_tv_kernel_call_in_the_outputs_dtype(rng, monkeypatch):
    """(A spy on the dispatcher, since no GPU runs here: on CUDA tensors that call is the fused Triton kernel.)
    float32 logits stay float32 torch tensors on their device, stacked [M, N, K], never float64 numpy."""
    calls = []
    real = utv_module.tv_distance

    def spy(a, b, **kwargs):
        calls.append((tuple(a.shape), tuple(b.shape), a.dtype, b.dtype, a.device))
        return real(a, b, **kwargs)

    monkeypatch.setattr(utv_module, "tv_distance", spy)
    unlearned = torch.from_numpy(rng.normal(size=(40, 10))).float()
    retrained = torch.from_numpy(rng.normal(size=(3, 40, 10))).float()
    utv(unlearned, retrained, from_logits=True)
    assert calls[0] == ((3, 40, 10), (40, 10), torch.float32, torch.float32, torch.device("cpu"))
    assert calls[1][:2] == ((3, 40, 10), (3, 40, 10))  # the three pairs of the floor, in one more call
    assert len(calls) == 2


def test_utv_rejects_mismatched_models(rng):
    with pytest.raises(ValueError, match="same N samples"):
        utv(random_probs(rng, 10, 4), random_probs(rng, 11, 4))
    with pytest.raises(ValueError, match="different shapes"):
        utv(random_probs(rng, 10, 4), [random_probs(rng, 10, 4), random_probs(rng, 9, 4)])
