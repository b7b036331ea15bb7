"""l1-sparse (Jia et al. 2023): fine-tune on the retained data with an l1 penalty that pushes the weights towards
a sparse model, which the paper finds easier to unlearn.

The penalty weight decays linearly from `alpha` to 0 over training. The reference decays it once per epoch;
here it decays every step (through fit's `progress`), which is the same schedule without the staircase.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch, LossFn
from fastforget.unlearn.common import finetune, finetune_defaults
from fastforget.unlearn.registry import UnlearnContext, register


def l1_norm(model: nn.Module) -> torch.Tensor:
    return torch.stack([p.abs().sum() for p in model.parameters()]).sum()


def l1_sparse_loss(alpha: float) -> LossFn:
    def loss(model: nn.Module, batch: Batch, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch.images)
        return F.cross_entropy(logits, batch.labels) + alpha * (1.0 - progress) * l1_norm(model), logits

    return loss


@register("l1", summary="cross-entropy on D_r plus an l1 penalty decaying linearly to 0", data="retain", samples=True,
          defaults=finetune_defaults(epochs=20, lr=0.01, alpha=5e-4))
def l1_sparse(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    finetune(ctx, model, l1_sparse_loss(hp["alpha"]), ctx.splits.train_r, hp, desc="l1")
    return model
