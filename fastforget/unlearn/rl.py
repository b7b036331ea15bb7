"""RL, random labels (Golatkar et al. 2020): train on the forget samples under random retained-class labels,
together with the retained samples, so the forget class loses its own label while the rest is rehearsed.

A forget sample gets a fresh label at every step, drawn uniformly from the classes outside the forget set
(as the SPEC says "among the other classes"); some reference code draws once per sample, or from all K classes.
"""

from __future__ import annotations

from torch import nn

from fastforget.unlearn.common import all_training_indices, finetune, finetune_defaults, random_label_loss
from fastforget.unlearn.registry import UnlearnContext, register


@register("rl", summary="random labels: forget samples relabelled among retained classes, trained with D_r",
          data="both", defaults=finetune_defaults(epochs=10, lr=0.01))
def rl(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    loss = random_label_loss(ctx.forget, ctx.num_classes, ctx.device)
    finetune(ctx, model, loss, all_training_indices(ctx), hp, desc="rl")
    return model
