"""UTV, the paper's unlearning discrepancy (section 6.3): how far an unlearned model's outputs on forget samples
are from a retrained model's, as the mean total variation distance 0.5 * sum_y |p_r(y|x) - p_u(y|x)|.

Two yardsticks go beyond the paper. The floor: retrained models of different seeds disagree with each other
too, so the mean TV between pairs of them is the least any method can be expected to reach; it comes with its
own interval, so a reader can see whether a method is distinguishable from retraining. The RWFT target's own
UTV, TV(q*, p_retrained), reported for the methods that fine-tune towards q* (their hyperparameters name a
`reassign` rule, which q* then follows): fine-tuning cannot be expected to get closer than q* itself, so it tells
a poor target apart from poor optimisation.

The distances stay in torch on the device of the outputs and come from `kernels.tv_distance`: all retrained
models in one [M, N, K] against [N, K] call, all pairs of them in one more, so the fused kernel serves evaluation
on a GPU. Intervals: bootstrap over the forget samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fastforget.kernels import reweighted_target, tv_distance
from fastforget.metrics._common import (
    ArrayLike,
    MetricResult,
    as_forget,
    check_finite,
    check_probabilities,
)
from fastforget.metrics.intervals import Interval, bootstrap_mean
from fastforget.metrics.registry import Column, EvalContext, register

Reassign = Literal["proportional", "max-class"]


@dataclass
class UTVResult(MetricResult):
    utv: float  # against the first retrained model (the one of the same seed)
    utv_ci: Interval
    utv_per_retrained: list[float]
    utv_mean: float  # over all retrained models
    floor: float | None  # mean TV between pairs of retrained models; None with a single one
    floor_ci: Interval | None
    n_samples: int
    n_retrained: int


def as_tensor(x: ArrayLike, name: str, *, probabilities: bool, device: torch.device | None = None) -> torch.Tensor:
    """Outputs as a floating tensor (numpy float64 stays float64; torch keeps its dtype and device)."""
    tensor = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))
    if not tensor.is_floating_point():
        tensor = tensor.double()
    tensor = tensor.to(device) if device is not None else tensor
    check_finite(tensor, name, logits=not probabilities)
    if probabilities:
        check_probabilities(tensor, name)
    return tensor


def as_tensor_stack(x: ArrayLike | Sequence[ArrayLike], name: str, *, probabilities: bool,
                    device: torch.device) -> torch.Tensor:
    """One model's outputs [N, K], several stacked [M, N, K], or a list of [N, K], as [M, N, K] on `device`."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name} is an empty list: pass the outputs of at least one model")
        tensors = [as_tensor(item, f"{name}[{i}]", probabilities=probabilities, device=device)
                   for i, item in enumerate(x)]
        if len({t.shape for t in tensors}) > 1:
            raise ValueError(f"the models in {name} have outputs of different shapes "
                             f"{[tuple(t.shape) for t in tensors]}: evaluate every model on the same samples")
        stack = torch.stack(tensors)
    else:
        stack = as_tensor(x, name, probabilities=probabilities, device=device)
    return stack[None] if stack.dim() == 2 else stack


def utv(probs_unlearned: ArrayLike, probs_retrained: ArrayLike | Sequence[ArrayLike], *,
        from_logits: bool = False, seed: int = 0) -> UTVResult:
    """UTV of an unlearned model's outputs [N, K] on forget samples against one or more retrained models.

    `probs_retrained` is [N, K], [M, N, K] or a list of [N, K], the first being the retrained model of the same
    seed; with two or more the floor is reported as well. Pass logits instead with from_logits=True.
    """
    unlearned = as_tensor(probs_unlearned, "probs_unlearned", probabilities=not from_logits)
    if unlearned.dim() != 2 or unlearned.shape[-1] < 2:
        raise ValueError(f"probs_unlearned must have shape [N, K] with K >= 2, got {tuple(unlearned.shape)}")
    retrained = as_tensor_stack(probs_retrained, "probs_retrained", probabilities=not from_logits,
                                device=unlearned.device).to(unlearned.dtype)
    if retrained.dim() != 3 or retrained.shape[1:] != unlearned.shape:
        raise ValueError(f"probs_unlearned {tuple(unlearned.shape)} and each retrained model's outputs "
                         f"{tuple(retrained.shape[1:])} must be [N, K] on the same N samples")
    if len(unlearned) == 0:
        raise ValueError("no forget samples: UTV is a mean over the forget samples and needs at least one")
    per_sample = tv_distance(retrained, unlearned, from_logits=from_logits).double().cpu().numpy()  # [M, N]
    first, second = torch.triu_indices(len(retrained), len(retrained), 1)
    floor_per_sample = None
    if len(first):
        floor_per_sample = tv_distance(retrained[first], retrained[second], from_logits=from_logits)
        floor_per_sample = floor_per_sample.double().mean(0).cpu().numpy()  # [N]: mean over pairs
    per_model = per_sample.mean(1)
    return UTVResult(
        utv=float(per_model[0]),
        utv_ci=bootstrap_mean(per_sample[0], seed=seed),
        utv_per_retrained=[float(value) for value in per_model],
        utv_mean=float(per_model.mean()),
        floor=None if floor_per_sample is None else float(floor_per_sample.mean()),
        floor_ci=None if floor_per_sample is None else bootstrap_mean(floor_per_sample, seed=seed),
        n_samples=len(unlearned),
        n_retrained=len(retrained),
    )


def target_utv(logits_original: ArrayLike, probs_retrained: ArrayLike | Sequence[ArrayLike],
               forget: int | Iterable[int], *, reassign: Reassign = "proportional", from_logits: bool = False,
               seed: int = 0) -> UTVResult:
    """UTV of the RWFT target q* itself, built with `reassign` from the original model's logits on the forget
    samples, against the retrained models' outputs (probabilities, or logits with from_logits=True).

    Takes the original's logits, not probabilities, because q* is a softmax with the forget columns at -inf:
    recovering it from probabilities would divide by 1 - p_f, which is 0 on exactly the confident samples that
    matter. With q* already at hand, call `utv(q_star, probs_retrained)`.
    """
    logits = as_tensor(logits_original, "logits_original", probabilities=False)
    if logits.dim() != 2 or logits.shape[-1] < 2:
        raise ValueError(f"logits_original must have shape [N, K] with K >= 2, got {tuple(logits.shape)}")
    forget_classes = as_forget(forget, logits.shape[1]).tolist()
    retrained = as_tensor_stack(probs_retrained, "probs_retrained", probabilities=not from_logits,
                                device=logits.device)
    if from_logits:
        retrained = retrained.softmax(-1)
    return utv(reweighted_target(logits, forget_classes, reassign), retrained.to(logits.dtype), seed=seed)


def _forget_logits(outputs, ctx: EvalContext, split: str) -> torch.Tensor:
    rows = ctx.forget_rows if split == "train" else ctx.splits.test_f
    return (outputs.train_at(rows) if split == "train" else outputs.test[rows]).to(ctx.device)


@register("utv", summary="mean TV distance to the retrained model on forget samples, with the floor between "
                         "retrained seeds and, for RWFT methods, the target's own",
          needs=("retrained",), table="table4_utv", title="Table 4 form: UTV",
          columns=[Column("utv_test", "UTV test", "lower", decimals=4, floor="utv_floor_test"),
                   Column("utv_floor_test", "UTV floor test", "lower", decimals=4, audit="none"),
                   Column("utv_target_test", "target UTV test", "lower", decimals=4, audit="none"),
                   Column("utv_train", "UTV train", "lower", decimals=4, floor="utv_floor_train"),
                   Column("utv_floor_train", "UTV floor train", "lower", decimals=4, in_table=False, audit="none"),
                   Column("utv_target_train", "target UTV train", "lower", decimals=4, in_table=False,
                          audit="none")])
def compute_utv(ctx: EvalContext) -> dict:
    results: dict = {}
    reassign = ctx.hyperparameters.get("reassign")  # the RWFT family names the rule its target follows
    for split in ("test", "train"):
        retrained = torch.stack([_forget_logits(r, ctx, split) for r in ctx.retrained])
        u = utv(_forget_logits(ctx.target, ctx, split), retrained, from_logits=True, seed=ctx.seed)
        results |= {f"utv_{split}": u.utv, f"utv_{split}_ci": u.utv_ci}
        if u.floor is not None:
            results |= {f"utv_floor_{split}": u.floor, f"utv_floor_{split}_ci": u.floor_ci}
        if reassign and ctx.original is not None:
            t = target_utv(_forget_logits(ctx.original, ctx, split), retrained, ctx.forget, reassign=reassign,
                           from_logits=True, seed=ctx.seed)
            results |= {f"utv_target_{split}": t.utv, f"utv_target_{split}_ci": t.utv_ci}
    results["utv_retrained_models"] = len(ctx.retrained)
    if reassign:
        results["utv_target_reassign"] = reassign
    return results
