"""RW-A: the original frozen; two identity-initialised adapters (middle stage, after the classifier) trained."""

from __future__ import annotations

from torch import nn

from fastforget.models import IdentityAdapters
from fastforget.unlearn.common import RWFT_DEFAULTS
from fastforget.unlearn.registry import UnlearnContext, register
from fastforget.unlearn.reweight import reweight_finetune


@register("rw-a", summary="reweighted training of two added identity-initialised layers; original weights frozen",
          data="forget", defaults={**RWFT_DEFAULTS, "block": None})
def rw_a(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = IdentityAdapters(ctx.copy_original(), hp["block"]).to(ctx.device)
    return reweight_finetune(ctx, model, hp, params=model.adapter_parameters(), desc="rw-a")
