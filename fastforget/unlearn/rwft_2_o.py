"""RWFT-2-O: reweighted fine-tuning of one middle block and the classifier only (the paper's best MIA-NN)."""

from __future__ import annotations

from torch import nn

from fastforget.models.contract import classifier_name, middle_block
from fastforget.unlearn.common import RWFT_DEFAULTS
from fastforget.unlearn.registry import UnlearnContext, register
from fastforget.unlearn.reweight import block_parameters, reweight_finetune


@register("rwft-2-o", summary="reweighted fine-tuning of a middle block + classifier (ResNet: layer3 + fc)",
          data="forget", defaults={**RWFT_DEFAULTS, "blocks": None})
def rwft_2_o(ctx: UnlearnContext, hp: dict) -> nn.Module:
    """`blocks` names the trained modules; by default the model contract's middle block and classifier."""
    model = ctx.copy_original()
    blocks = hp["blocks"] or [*middle_block(model, method="rwft-2-o", key="blocks"),
                              classifier_name(model, ctx.num_classes)]
    return reweight_finetune(ctx, model, hp, params=block_parameters(model, blocks), desc="rwft-2-o")
