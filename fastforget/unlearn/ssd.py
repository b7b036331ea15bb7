"""SSD, selective synaptic dampening (Foster et al. 2024): no training. Weights far more important to the forget
set than to the whole training set are shrunk towards zero.

Importance is the diagonal Fisher estimate of the reference: the squared gradient of the batch-mean
cross-entropy, averaged over batches, once on D (the whole training split, or a random `d_samples` of it; 0 means
all, as in the paper) and once on D_f. Where I_f > alpha * I_D, theta <- theta * min(lambda * I_D / I_f, 1).
Both passes use the same batch size and no augmentation, in eval mode so that BatchNorm statistics stay put.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.unlearn.registry import UnlearnContext, register


def fisher_diagonal(ctx: UnlearnContext, model: nn.Module, indices: torch.Tensor,
                    batch_size: int) -> list[torch.Tensor]:
    """Mean over batches of the squared batch-mean cross-entropy gradient, per parameter (model in eval mode)."""
    params = list(model.parameters())
    totals = [torch.zeros_like(p) for p in params]
    loader = ctx.loader(indices, batch_size, shuffle=False, augment=False)
    for images, labels, _ in loader:
        grads = torch.autograd.grad(F.cross_entropy(model(images), labels), params)
        torch._foreach_addcmul_(totals, grads, grads)
    return [total / max(1, len(loader)) for total in totals]


@torch.no_grad()
def dampen(params: list[nn.Parameter], importance_d: list[torch.Tensor], importance_f: list[torch.Tensor],
           alpha: float, lam: float) -> None:
    """theta <- theta * min(lam * I_D / I_f, 1) where I_f > alpha * I_D; elsewhere theta is left exactly as is."""
    for p, imp_d, imp_f in zip(params, importance_d, importance_f, strict=True):
        selected = imp_f > alpha * imp_d
        factor = (lam * imp_d / imp_f).clamp(max=1.0)
        p.copy_(torch.where(selected, p * factor, p))


@register("ssd", summary="selective synaptic dampening: shrink weights far more important to D_f than to D",
          data="both", samples=True, defaults={"alpha": 10.0, "lambda": 1.0, "batch_size": 128, "d_samples": 0})
def ssd(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original().eval()
    everything = torch.arange(len(ctx.dataset.train_labels))
    if 0 < hp["d_samples"] < len(everything):
        generator = torch.Generator().manual_seed(ctx.seed)
        everything = everything[torch.randperm(len(everything), generator=generator)[:hp["d_samples"]]]
    importance_d = fisher_diagonal(ctx, model, everything, hp["batch_size"])
    importance_f = fisher_diagonal(ctx, model, ctx.splits.train_f, hp["batch_size"])
    dampen(list(model.parameters()), importance_d, importance_f, hp["alpha"], hp["lambda"])
    return model
