"""RW-A: the original frozen; two identity-initialised adapters (middle stage, after the classifier) trained."""

from __future__ import annotations

from torch import nn

from fastforget.models import IdentityAdapters
from fastforget.models.contract import middle_block, output_channels
from fastforget.unlearn.common import RWFT_DEFAULTS
from fastforget.unlearn.registry import UnlearnContext, register
from fastforget.unlearn.reweight import reweight_finetune


@register("rw-a", summary="reweighted training of two added identity-initialised layers; original weights frozen",
          data="forget", defaults={**RWFT_DEFAULTS, "adapter_after": None})
def rw_a(ctx: UnlearnContext, hp: dict) -> nn.Module:
    """`adapter_after` names the module the 1x1 adapter follows; by default the model contract's middle block."""
    base = ctx.copy_original()
    block = hp["adapter_after"] or middle_block(base, method="rw-a", key="adapter_after")[-1]
    channels = output_channels(base, block, tuple(ctx.dataset.train_images.shape[1:]))
    model = IdentityAdapters(base, block, channels, ctx.num_classes).to(ctx.device)
    return reweight_finetune(ctx, model, hp, params=model.adapter_parameters(), desc="rw-a")
