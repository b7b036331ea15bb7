"""RWFT-2-O: reweighted fine-tuning of one middle block and the classifier only (the paper's best MIA-NN)."""

from __future__ import annotations

from torch import nn

from fastforget.unlearn.common import RWFT_DEFAULTS
from fastforget.unlearn.registry import UnlearnContext, register
from fastforget.unlearn.reweight import block_parameters, reweight_finetune


@register("rwft-2-o", summary="reweighted fine-tuning of a middle block + classifier (ResNet: layer3 + fc)",
          data="forget", defaults={**RWFT_DEFAULTS, "blocks": None})
def rwft_2_o(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    blocks = hp["blocks"] or [model.middle_block, model.classifier]
    return reweight_finetune(ctx, model, hp, params=block_parameters(model, blocks), desc="rwft-2-o")
