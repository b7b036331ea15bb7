"""U-LIRA (Hayes et al. 2024): can an attacker with shadow models tell an unlearned model from a retrained one?

Protocol. Shadow pair i is a shadow model trained on all data and then unlearned with the method under test,
and a shadow model retrained without the forget classes; the model under test and its own retrained model form
one more pair. Their outputs on the same S forget training samples are the inputs. The per-sample signal is the
logit-scaled confidence in the true class, phi = log p_y - log(1 - p_y) (from logits: z_y - logsumexp_{k != y}
z_k, exact even where p_y rounds to 1 or to 0).

For each sample, one Gaussian is fitted to the signals of the unlearned models and one to those of the retrained
models; a model's output on that sample is called "unlearned" when the likelihood ratio unlearned : retrained
exceeds 1. The per-sample variances are moderated towards the variance pooled over all samples (the posterior
mean under a scaled inverse-chi-squared prior with `prior_df` degrees of freedom, as limma does for gene-wise
variances): var_i = (prior_df * pooled + (n - 1) * s_i^2) / (prior_df + n - 1) for n models of a kind. With few
models this is the pooled variance, the fallback LiRA uses; with many it is each sample's own; it is never the
arbitrary floor that, with one model per side, turned the test into a nearest-mean rule.

Leave-one-pair-out: each pair in turn is the target pair, classified by Gaussians fitted on all the other pairs,
so every fit sees at least two models of each kind (the protocol needs 3 pairs or more). The headline is the
balanced accuracy over all target pairs and samples, in percent: 50 means the method is indistinguishable from
retraining, 100 that it is always caught (Hayes et al.'s definition). Its interval is a bootstrap over the forget
samples. The model under test's own pair is reported on its own as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from fastforget.errors import ConfigError
from fastforget.metrics._common import (
    PROBABILITY_FLOOR,
    ArrayLike,
    MetricResult,
    as_labels,
    as_model_stack,
)
from fastforget.metrics.intervals import Interval, bootstrap_mean
from fastforget.metrics.registry import Column, EvalContext, register

MIN_PAIRS = 3
PRIOR_DF = 2.0  # the pooled variance counts as much as two models' own evidence on a sample
SIGNAL_LIMIT = 1e3  # a masked class (logit -inf) sits here; trained logits are never this far apart
VARIANCE_FLOOR = 1e-12  # only for signals that no model varies at all (every output saturated alike)
# The default, from the N-curve on digits (bench/README.md): the median over draws of the shadows barely moves with N,
# but the headline's spread over which shadows were drawn shrinks from ~20 points at N=2 to ~8 at N=6.
SHADOW_PAIRS = 6


def logit_confidence(outputs: np.ndarray, labels: np.ndarray, *, from_logits: bool) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) for outputs [..., S, K] and labels [S]: [..., S], clipped to +-SIGNAL_LIMIT."""
    is_true = np.zeros(outputs.shape[-2:], dtype=bool)
    is_true[np.arange(len(labels)), labels] = True
    with np.errstate(invalid="ignore"):
        if from_logits:
            true_logit = np.where(is_true, outputs, 0.0).sum(-1)
            phi = true_logit - logsumexp(np.where(is_true, -np.inf, outputs), axis=-1)
        else:
            p_true = np.where(is_true, outputs, 0.0).sum(-1)
            p_rest = np.where(is_true, 0.0, outputs).sum(-1)  # summed, not 1 - p_y: keeps precision near p_y = 1
            phi = np.log(np.maximum(p_true, PROBABILITY_FLOOR)) - np.log(np.maximum(p_rest, PROBABILITY_FLOOR))
    return np.clip(phi, -SIGNAL_LIMIT, SIGNAL_LIMIT)


def moderated_gaussian(signals: np.ndarray, prior_df: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean and moderated variance of signals [n_models, S] (n_models >= 2)."""
    n = len(signals)
    sample_variance = signals.var(0, ddof=1)
    pooled = sample_variance.mean()
    variance = (prior_df * pooled + (n - 1) * sample_variance) / (prior_df + n - 1)
    return signals.mean(0), np.maximum(variance, VARIANCE_FLOOR)


@dataclass
class GaussianPair:
    """Per-sample Gaussians of the signal under "unlearned" and under "retrained"."""

    mean_unlearned: np.ndarray
    var_unlearned: np.ndarray
    mean_retrained: np.ndarray
    var_retrained: np.ndarray

    @classmethod
    def fit(cls, unlearned: np.ndarray, retrained: np.ndarray, prior_df: float) -> GaussianPair:
        """From signals [n_models, S] of each kind."""
        return cls(*moderated_gaussian(unlearned, prior_df), *moderated_gaussian(retrained, prior_df))

    def called_unlearned(self, signal: np.ndarray) -> np.ndarray:
        """True where the likelihood ratio unlearned : retrained of signal [..., S] exceeds 1."""
        def log_density(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
            return -0.5 * (signal - mean) ** 2 / var - 0.5 * np.log(var)

        return log_density(self.mean_unlearned, self.var_unlearned) > log_density(self.mean_retrained,
                                                                                  self.var_retrained)


@dataclass
class ULiRAResult(MetricResult):
    balanced_accuracy: float  # percent over all target pairs (leave-one-pair-out) and samples; 50 is ideal
    balanced_accuracy_ci: Interval  # bootstrap over the forget samples
    unlearned_detected: float  # percent of the unlearned targets' decisions that said "unlearned"
    retrained_detected: float  # percent of the retrained targets' decisions that said "retrained"
    target_pair_balanced_accuracy: float | None  # the model under test and its retrained model, on their own
    target_called_unlearned: float | None  # without a retrained target: percent of its decisions "unlearned"
    n_pairs: int  # target pairs: the shadow pairs, plus the model under test's own pair when given
    n_shadow_pairs: int
    n_samples: int
    prior_df: float


def ulira(unlearned_shadows: ArrayLike, retrained_shadows: ArrayLike, labels: ArrayLike, *,
          target: ArrayLike | None = None, target_retrained: ArrayLike | None = None, from_logits: bool = False,
          prior_df: float = PRIOR_DF, seed: int = 0) -> ULiRAResult:
    """U-LIRA from shadow outputs [N, S, K] on S forget samples with true labels [S].

    `target` ([S, K]) is the model under test; with `target_retrained`, its retrained model, the two join the
    pairs as one more (N + 1 pairs); without it, the target is only classified by Gaussians fitted on all N.
    Probabilities, or logits with from_logits=True.
    """
    probabilities = not from_logits
    unlearned = as_model_stack(unlearned_shadows, "unlearned_shadows", probabilities=probabilities)
    retrained = as_model_stack(retrained_shadows, "retrained_shadows", probabilities=probabilities)
    if unlearned.shape != retrained.shape:
        raise ValueError(f"unlearned_shadows {unlearned.shape} and retrained_shadows {retrained.shape} must both be "
                         "[N, S, K]: N shadow pairs, each evaluated on the same S forget samples")
    n_shadow_pairs, n_samples, num_classes = unlearned.shape
    if n_samples == 0:
        raise ValueError("no forget samples: pass shadow outputs on at least one sample of the forget classes")
    if target_retrained is not None and target is None:
        raise ValueError("target_retrained pairs with a target: pass target as well")
    labels = as_labels(labels, "labels", length=n_samples, num_classes=num_classes)

    def signal(outputs: ArrayLike, name: str) -> np.ndarray:
        stack = as_model_stack(outputs, name, probabilities=probabilities)
        if stack.shape[1:] != (n_samples, num_classes):
            raise ValueError(f"{name} must be [S, K] = [{n_samples}, {num_classes}] like the shadows, got "
                             f"{stack.shape[1:]}")
        return logit_confidence(stack, labels, from_logits=from_logits)

    signal_unlearned = signal(unlearned, "unlearned_shadows")
    signal_retrained = signal(retrained, "retrained_shadows")
    paired = target_retrained is not None
    if paired:
        signal_unlearned = np.concatenate([signal_unlearned, signal(target, "target")])
        signal_retrained = np.concatenate([signal_retrained, signal(target_retrained, "target_retrained")])
    n_pairs = len(signal_unlearned)
    if n_pairs < MIN_PAIRS:
        raise ValueError(f"U-LIRA needs at least {MIN_PAIRS} pairs (shadow pairs, plus the target's own when its "
                         f"retrained model is given), got {n_pairs}: leave-one-pair-out would fit each Gaussian to a "
                         "single model, with no variance to estimate; train more shadow pairs")

    unlearned_hits, retrained_hits = np.empty((n_pairs, n_samples)), np.empty((n_pairs, n_samples))
    for held_out in range(n_pairs):
        others = np.arange(n_pairs) != held_out
        gaussians = GaussianPair.fit(signal_unlearned[others], signal_retrained[others], prior_df)
        unlearned_hits[held_out] = gaussians.called_unlearned(signal_unlearned[held_out])
        retrained_hits[held_out] = ~gaussians.called_unlearned(signal_retrained[held_out])
    per_sample = 50.0 * (unlearned_hits.mean(0) + retrained_hits.mean(0))

    target_called = None
    if target is not None and not paired:
        attack = GaussianPair.fit(signal_unlearned, signal_retrained, prior_df)
        target_called = 100.0 * float(attack.called_unlearned(signal(target, "target")).mean())
    return ULiRAResult(
        balanced_accuracy=float(per_sample.mean()),
        balanced_accuracy_ci=bootstrap_mean(per_sample, seed=seed),
        unlearned_detected=100.0 * float(unlearned_hits.mean()),
        retrained_detected=100.0 * float(retrained_hits.mean()),
        target_pair_balanced_accuracy=50.0 * float(unlearned_hits[-1].mean() + retrained_hits[-1].mean())
        if paired else None,
        target_called_unlearned=target_called,
        n_pairs=n_pairs,
        n_shadow_pairs=n_shadow_pairs,
        n_samples=n_samples,
        prior_df=prior_df,
    )


def attack_rows(ctx: EvalContext) -> torch.Tensor:
    """The forget training samples U-LIRA scores: all, or a seeded `attack_samples` of them."""
    rows, limit = ctx.forget_rows, ctx.setting("attack_samples")
    if limit and len(rows) > limit:
        generator = torch.Generator().manual_seed(ctx.seed)
        rows = rows[torch.randperm(len(rows), generator=generator)[:limit]].sort().values
    return rows


def check_pairs(settings: Mapping[str, Any], with_target: bool) -> None:
    """Leave-one-pair-out needs MIN_PAIRS pairs (shadow pairs, plus the target with its retrained model): checked
    before any shadow model is trained."""
    shadows = settings["shadows"]
    if shadows + with_target < MIN_PAIRS:
        raise ConfigError(f"U-LIRA needs at least {MIN_PAIRS} pairs, got {shadows} shadow pair(s)"
                          f"{' and the target with its retrained model' if with_target else ''}: raise --shadows "
                          f"(bench.shadows), the default is {SHADOW_PAIRS}")


@register("ulira", summary="U-LIRA balanced accuracy in % (50 ideal): shadow models unlearned with the method "
                           "against shadow retrained models, leave-one-pair-out",
          needs=("shadows",), default=False, table="table3_ulira", title="Table 3 form: U-LIRA",
          columns=[Column("ulira", "U-LIRA %", "50"),
                   Column("ulira_target_pair", "U-LIRA own pair %", "50", in_table=False,
                                 audit="none")],  # one pair, no interval: reported, not tested
          settings={"shadows": SHADOW_PAIRS, "attack_samples": 0}, check=check_pairs)
def compute_ulira(ctx: EvalContext) -> dict:
    check_pairs({"shadows": ctx.setting("shadows")}, bool(ctx.retrained))
    rows = attack_rows(ctx)
    shadows = ctx.shadows_on(rows)
    result = ulira(shadows.unlearned, shadows.retrained, ctx.dataset.train_labels[rows],
                   target=ctx.target.train_at(rows),
                   target_retrained=ctx.retrained[0].train_at(rows) if ctx.retrained else None,
                   from_logits=True, seed=ctx.seed)
    return {"ulira": result.balanced_accuracy, "ulira_ci": result.balanced_accuracy_ci,
            "ulira_target_pair": result.target_pair_balanced_accuracy,
            "ulira_target_called_unlearned": result.target_called_unlearned,
            "ulira_unlearned_detected": result.unlearned_detected,
            "ulira_retrained_detected": result.retrained_detected,
            "ulira_pairs": result.n_pairs, "ulira_shadow_pairs": result.n_shadow_pairs,
            "ulira_samples": result.n_samples}
