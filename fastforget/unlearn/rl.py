"""RL, random labels (Golatkar et al. 2020): train on the forget samples under random retained-class labels,
together with the retained samples, so the forget class loses its own label while the rest is rehearsed.

A forget sample gets a fresh label at every step, drawn uniformly from the classes outside the forget set
(as the SPEC says "among the other classes"); some reference code draws once per sample, or from all K classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch, LossFn
from fastforget.unlearn.common import finetune
from fastforget.unlearn.ft import finetune_defaults
from fastforget.unlearn.registry import UnlearnContext, register


def retained_classes(forget: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    keep = torch.ones(num_classes, dtype=torch.bool, device=device)
    keep[list(forget)] = False
    return torch.nonzero(keep).flatten()


def random_relabel(labels: torch.Tensor, forget: torch.Tensor, retained: torch.Tensor) -> torch.Tensor:
    """`labels` with every forget-class label replaced by a uniformly drawn retained class (fresh per call)."""
    draws = retained[torch.randint(len(retained), labels.shape, device=labels.device)]
    return torch.where(torch.isin(labels, forget), draws, labels)


def random_label_loss(forget: Sequence[int], num_classes: int, device: torch.device) -> LossFn:
    """Cross-entropy against the batch labels, forget-class labels redrawn at random among the retained classes."""
    forget_t = torch.tensor(list(forget), dtype=torch.long, device=device)
    retained = retained_classes(forget, num_classes, device)

    def loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch.images)
        return F.cross_entropy(logits, random_relabel(batch.labels, forget_t, retained)), logits

    return loss


def all_training_indices(ctx: UnlearnContext) -> torch.Tensor:
    return torch.cat((ctx.splits.train_f, ctx.splits.train_r))


@register("rl", summary="random labels: forget samples relabelled among retained classes, trained with D_r",
          data="both", defaults=finetune_defaults(epochs=10, lr=0.01))
def rl(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    loss = random_label_loss(ctx.forget, ctx.num_classes, ctx.device)
    finetune(ctx, model, loss, all_training_indices(ctx), hp, desc="rl")
    return model
