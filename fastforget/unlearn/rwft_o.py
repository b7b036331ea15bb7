"""RWFT-O: fine-tune every parameter towards the reweighted original prediction on the forget set."""

from __future__ import annotations

from torch import nn

from fastforget.unlearn.common import RWFT_DEFAULTS
from fastforget.unlearn.registry import UnlearnContext, register
from fastforget.unlearn.reweight import reweight_finetune


@register("rwft-o", summary="reweighted fine-tuning of all parameters on D_train_f (the paper's RWFT-O)",
          data="forget", defaults=RWFT_DEFAULTS)
def rwft_o(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    return reweight_finetune(ctx, model, hp, params=list(model.parameters()), desc="rwft-o")
