"""FT (Warnecke et al. 2021): fine-tune on cross-entropy over the retained training data only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch
from fastforget.unlearn.common import finetune, finetune_defaults
from fastforget.unlearn.registry import UnlearnContext, register


def cross_entropy_loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch.images)
    return F.cross_entropy(logits, batch.labels), logits


@register("ft", summary="fine-tune on cross-entropy over the retained training data", data="retain", samples=True,
          defaults=finetune_defaults(epochs=20, lr=0.01))
def ft(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    finetune(ctx, model, cross_entropy_loss, ctx.splits.train_r, hp, desc="ft")
    return model
