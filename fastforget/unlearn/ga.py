"""GA, gradient ascent (Thudi et al. 2022): maximise cross-entropy on the forget samples.

BatchNorm statistics update as in the reference code (train mode on forget-only batches); `freeze_bn=true`
keeps them fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch
from fastforget.unlearn.common import finetune, finetune_defaults
from fastforget.unlearn.registry import UnlearnContext, register


def negative_cross_entropy(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch.images)
    return -F.cross_entropy(logits, batch.labels), logits


@register("ga", summary="gradient ascent: maximise cross-entropy on the forget samples", data="forget", samples=True,
          defaults=finetune_defaults(epochs=20, lr=1e-4, freeze_bn=False))
def ga(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    finetune(ctx, model, negative_cross_entropy, ctx.splits.train_f, hp, freeze_bn=hp["freeze_bn"], desc="ga")
    return model
