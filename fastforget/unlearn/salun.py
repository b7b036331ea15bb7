"""SalUn (Fan et al. 2023): random-label unlearning restricted to the weights most salient for the forget set.

Saliency of a weight = |d/dw of the forget loss|, the loss being the cross-entropy summed over all of D_train_f
(the reference accumulates the signed batch gradients and takes the absolute value once, which this equals up
to the batches' mean scaling). The top fraction `ratio` of all weights, ranked globally over every parameter
tensor, gets mask 1, the rest 0. Training is then `rl`'s (forget samples relabelled at random among retained
classes, plus the retained samples) with the gradient masked; fit() adds weight decay before masking, so a
weight outside the mask keeps its exact value: no step, no decay, no momentum.

BatchNorm running statistics are buffers, not weights: as in the reference they keep updating in train mode
(on batches of the whole training set, so they barely move). `freeze_bn=true` freezes them as well, which leaves
the model bit-identical outside the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.errors import FastForgetError
from fastforget.unlearn.common import all_training_indices, finetune, finetune_defaults, random_label_loss
from fastforget.unlearn.registry import UnlearnContext, register


def forget_saliency(ctx: UnlearnContext, model: nn.Module, batch_size: int) -> dict[str, torch.Tensor]:
    """|gradient| of the forget loss (cross-entropy summed over D_train_f) for every parameter, by name."""
    names, params = zip(*model.named_parameters(), strict=True)
    totals = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()  # saliency of the model as it is: no BatchNorm batch statistics, no buffer updates
    for images, labels, _ in ctx.loader(ctx.splits.train_f, batch_size, shuffle=False, augment=False):
        loss = F.cross_entropy(model(images), labels, reduction="sum")
        for total, grad in zip(totals, torch.autograd.grad(loss, params), strict=True):
            total += grad
    model.train(was_training)
    return {name: total.abs() for name, total in zip(names, totals, strict=True)}


def saliency_masks(ctx: UnlearnContext, model: nn.Module, ratio: float, batch_size: int) -> dict[str, torch.Tensor]:
    """1 on the `ratio` most forget-salient weights of the whole model (one global ranking), 0 elsewhere."""
    if not 0.0 < ratio <= 1.0:
        raise FastForgetError(f"salun ratio must be in (0, 1], the fraction of weights to train; got {ratio}")
    saliency = forget_saliency(ctx, model, batch_size)
    flat = torch.cat([s.flatten() for s in saliency.values()])
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, int(ratio * flat.numel()), sorted=False).indices] = 1.0
    parts = keep.split([s.numel() for s in saliency.values()])
    return {name: part.view_as(s) for (name, s), part in zip(saliency.items(), parts, strict=True)}


@register("salun", summary="random labels, training only the weights most salient for the forget set",
          data="both", defaults=finetune_defaults(epochs=15, lr=0.013, ratio=0.5, freeze_bn=False))
def salun(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    masks = saliency_masks(ctx, model, hp["ratio"], hp["batch_size"])
    grad_masks = {p: masks[name] for name, p in model.named_parameters()}
    finetune(ctx, model, random_label_loss(ctx.forget, ctx.num_classes, ctx.device), all_training_indices(ctx),
             hp, grad_masks=grad_masks, freeze_bn=hp["freeze_bn"], desc="salun")
    return model
