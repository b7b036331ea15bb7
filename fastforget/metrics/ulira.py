"""U-LIRA (Hayes et al. 2024): can an attacker with shadow models tell an unlearned model from a retrained one?

Protocol. The attacker has N shadow pairs: shadow model i trained on all data and then unlearned with the method
under test, and shadow model i retrained without the forget classes. Their outputs on the same S forget samples
are the inputs. The per-sample signal is the logit-scaled confidence in the true class,
phi = log p_y - log(1 - p_y) (from logits: z_y - logsumexp_{k != y} z_k, exact even where p_y rounds to 1).
For each sample, one Gaussian is fitted to the signals of the unlearned shadows and one to those of the
retrained shadows (mean and population standard deviation, floored at `std_floor`); a model's output on that
sample is called "unlearned" when its likelihood ratio unlearned : retrained exceeds 1.

Leave-one-pair-out: for each pair i the Gaussians are fitted on the other N - 1 pairs, and the held-out
unlearned model i (truth: "unlearned") and retrained model i (truth: "retrained") are classified on every
sample. Balanced accuracy over all (pair, sample) decisions, in percent, is the score: 50 means the method is
indistinguishable from retraining, 100 means it is always caught. An actual target model, if given, is then
classified by Gaussians fitted on all N pairs.

Forgotten-class confidences sit near 0 for any decent method, for unlearned and retrained models alike; what
U-LIRA measures is whether they sit near 0 in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from fastforget.metrics._common import (
    PROBABILITY_FLOOR,
    ArrayLike,
    MetricResult,
    as_labels,
    as_model_stack,
)


def logit_confidence(outputs: np.ndarray, labels: np.ndarray, *, from_logits: bool) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) for outputs [..., S, K] and labels [S]: [..., S]."""
    is_true = np.zeros(outputs.shape[-2:], dtype=bool)
    is_true[np.arange(len(labels)), labels] = True
    if from_logits:
        true_logit = np.where(is_true, outputs, 0.0).sum(-1)
        return true_logit - logsumexp(np.where(is_true, -np.inf, outputs), axis=-1)
    p_true = np.where(is_true, outputs, 0.0).sum(-1)
    p_rest = np.where(is_true, 0.0, outputs).sum(-1)  # summed, not 1 - p_y: keeps its precision near p_y = 1
    return np.log(np.maximum(p_true, PROBABILITY_FLOOR)) - np.log(np.maximum(p_rest, PROBABILITY_FLOOR))


@dataclass
class GaussianPair:
    """Per-sample Gaussians of the signal under "unlearned" and under "retrained"."""

    mean_unlearned: np.ndarray
    std_unlearned: np.ndarray
    mean_retrained: np.ndarray
    std_retrained: np.ndarray

    @classmethod
    def fit(cls, unlearned: np.ndarray, retrained: np.ndarray, std_floor: float) -> GaussianPair:
        """From signals [n_models, S] of each kind."""
        return cls(unlearned.mean(0), np.maximum(unlearned.std(0), std_floor),
                   retrained.mean(0), np.maximum(retrained.std(0), std_floor))

    def called_unlearned(self, signal: np.ndarray) -> np.ndarray:
        """True where the likelihood ratio unlearned : retrained of signal [..., S] exceeds 1."""
        def log_density(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
            return -0.5 * ((signal - mean) / std) ** 2 - np.log(std)

        return log_density(self.mean_unlearned, self.std_unlearned) > log_density(self.mean_retrained,
                                                                                  self.std_retrained)


@dataclass
class ULiRAResult(MetricResult):
    balanced_accuracy: float  # percent, leave-one-pair-out over the shadow pairs; 50 is ideal
    unlearned_detected: float  # percent of held-out unlearned (pair, sample) decisions that said "unlearned"
    retrained_detected: float  # percent of held-out retrained decisions that said "retrained"
    n_pairs: int
    n_samples: int
    target_accuracy: float | None  # percent of the target's (model, sample) decisions that said "unlearned"
    target_balanced_accuracy: float | None  # with a retrained target: mean of the above and its "retrained" rate


def ulira(unlearned_shadows: ArrayLike, retrained_shadows: ArrayLike, labels: ArrayLike, *,
          target: ArrayLike | None = None, target_retrained: ArrayLike | None = None, from_logits: bool = False,
          std_floor: float = 1e-2) -> ULiRAResult:
    """U-LIRA from shadow outputs [N, S, K] (N >= 2 pairs) on S forget samples with true labels [S].

    `target` is the model under test ([S, K] or several stacked [T, S, K]); `target_retrained`, a retrained model
    outside the shadows, turns its score into a balanced accuracy. Probabilities, or logits with from_logits=True.
    """
    probabilities = not from_logits
    unlearned = as_model_stack(unlearned_shadows, "unlearned_shadows", probabilities=probabilities)
    retrained = as_model_stack(retrained_shadows, "retrained_shadows", probabilities=probabilities)
    if unlearned.shape != retrained.shape:
        raise ValueError(f"unlearned_shadows {unlearned.shape} and retrained_shadows {retrained.shape} must both be "
                         "[N, S, K]: N shadow pairs, each evaluated on the same S forget samples")
    n_pairs, n_samples, num_classes = unlearned.shape
    if n_pairs < 2:
        raise ValueError("leave-one-pair-out needs at least 2 shadow pairs (3 in the paper), got 1: train more")
    if n_samples == 0:
        raise ValueError("no forget samples: pass shadow outputs on at least one sample of the forget classes")
    if target_retrained is not None and target is None:
        raise ValueError("target_retrained only calibrates the score of a target: pass target as well")
    labels = as_labels(labels, "labels", length=n_samples, num_classes=num_classes)
    signal_unlearned = logit_confidence(unlearned, labels, from_logits=from_logits)
    signal_retrained = logit_confidence(retrained, labels, from_logits=from_logits)

    unlearned_hits, retrained_hits = [], []
    for held_out in range(n_pairs):
        others = np.arange(n_pairs) != held_out
        gaussians = GaussianPair.fit(signal_unlearned[others], signal_retrained[others], std_floor)
        unlearned_hits.append(gaussians.called_unlearned(signal_unlearned[held_out]))
        retrained_hits.append(~gaussians.called_unlearned(signal_retrained[held_out]))
    unlearned_detected = float(np.mean(unlearned_hits))
    retrained_detected = float(np.mean(retrained_hits))

    attack = GaussianPair.fit(signal_unlearned, signal_retrained, std_floor)

    def called_unlearned_rate(model_outputs: ArrayLike | None, name: str) -> float | None:
        if model_outputs is None:
            return None
        stack = as_model_stack(model_outputs, name, probabilities=probabilities)
        if stack.shape[1:] != (n_samples, num_classes):
            raise ValueError(f"{name} must be [S, K] or [T, S, K] = [..., {n_samples}, {num_classes}] like the "
                             f"shadows, got {stack.shape[1:]}")
        return float(attack.called_unlearned(logit_confidence(stack, labels, from_logits=from_logits)).mean())

    target_rate = called_unlearned_rate(target, "target")
    target_retrained_rate = called_unlearned_rate(target_retrained, "target_retrained")
    target_balanced_accuracy = None
    if target_rate is not None and target_retrained_rate is not None:
        target_balanced_accuracy = 50.0 * (target_rate + 1.0 - target_retrained_rate)
    return ULiRAResult(
        balanced_accuracy=50.0 * (unlearned_detected + retrained_detected),
        unlearned_detected=100.0 * unlearned_detected,
        retrained_detected=100.0 * retrained_detected,
        n_pairs=n_pairs,
        n_samples=n_samples,
        target_accuracy=None if target_rate is None else 100.0 * target_rate,
        target_balanced_accuracy=target_balanced_accuracy,
    )
