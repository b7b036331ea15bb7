"""FT (Warnecke et al. 2021): fine-tune on cross-entropy over the retained training data only.

Also home of the pieces the other cross-entropy baselines share: the fine-tuning defaults and the plain
cross-entropy loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch
from fastforget.unlearn.common import finetune
from fastforget.unlearn.registry import UnlearnContext, register


def finetune_defaults(*, epochs: int, lr: float, **extra: Any) -> dict[str, Any]:
    """The hyperparameters every fine-tuning baseline exposes, so each can be overridden per data set."""
    return {"epochs": epochs, "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
            "schedule": "constant", **extra}


def cross_entropy_loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch.images)
    return F.cross_entropy(logits, batch.labels), logits


@register("ft", summary="fine-tune on cross-entropy over the retained training data", data="retain",
          defaults=finetune_defaults(epochs=20, lr=0.01))
def ft(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    finetune(ctx, model, cross_entropy_loss, ctx.splits.train_r, hp, desc="ft")
    return model
