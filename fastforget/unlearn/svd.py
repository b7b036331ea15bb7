"""SVD unlearning (Kodge et al. 2024, "Deep unlearning: fast and efficient gradient-free class forgetting").

No gradients, no training. For every conv and linear layer, the layer's input activations on a few retained
samples (`samples_per_class` of each retained class) and on `forget_samples` forget samples span two subspaces;
their SVDs, with each direction weighted by its scaled share of the energy, give soft projections

    M = U diag(alpha r / ((alpha - 1) r + 1)) U^T,   r_i = s_i^2 / sum_j s_j^2,

M_r (alpha_r) for the retained data and M_f (alpha_f) for the forget data. The forget-only part of the input
space, M_f - M_f M_r, is removed from every weight: W <- W P^T with P = I - (M_f - M_f M_r). Biases are kept.
A conv layer's inputs are its unfolded patches (C_in x kh x kw per output position), matching the weight
flattened to [C_out, C_in * kh * kw]; a linear layer's inputs are its input vectors.

Activations come from the original model in eval mode, all before any weight changes. The SVD is taken through
the activations' Gram matrix A^T A (accumulated in float64 over batches, eigendecomposed): same U and s^2, and
memory independent of the number of patches, so every patch is used where the reference subsamples 10,000.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.unlearn.registry import UnlearnContext, register


def projectable_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weights act on an input vector: linear layers and ungrouped, zero-padded convolutions."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) or (
        isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str))]


def layer_input_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows that its flattened weight multiplies: conv patches or linear input vectors."""
    if not isinstance(layer, nn.Conv2d):
        return x.reshape(-1, x.shape[-1])
    # Strided windows of the zero-padded input (a view; F.unfold is far slower on CPU), in the order
    # [image, row, column] x [channel, kernel row, kernel column] that matches weight.flatten(1).
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = layer.kernel_size, layer.stride, layer.dilation, layer.padding
    windows = F.pad(x, (pw, pw, ph, ph)).unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    patches = windows[..., ::dh, ::dw]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)


@torch.no_grad()
def activation_grams(model: nn.Module, loader: Iterable) -> dict[nn.Module, torch.Tensor]:
    """Per layer, sum of a a^T over every input row a seen while the model runs over `loader` (float64)."""
    grams: dict[nn.Module, torch.Tensor] = {}

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        rows = layer_input_rows(layer, inputs[0]).double()
        gram = rows.T @ rows
        grams[layer] = grams[layer] + gram if layer in grams else gram

    handles = [layer.register_forward_pre_hook(record) for layer in projectable_layers(model)]
    try:
        for images, _, _ in loader:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return grams


def scaled_energy_projection(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """U diag(alpha r / ((alpha - 1) r + 1)) U^T from the Gram matrix A^T A = U diag(s^2) U^T, r = s^2 / sum s^2."""
    energy, directions = torch.linalg.eigh(gram)
    energy = energy.clamp(min=0)
    ratio = energy / energy.sum().clamp(min=torch.finfo(energy.dtype).tiny)
    scale = alpha * ratio / ((alpha - 1) * ratio + 1)
    return (directions * scale) @ directions.T


def forget_removal(gram_r: torch.Tensor, gram_f: torch.Tensor, alpha_r: float, alpha_f: float) -> torch.Tensor:
    """P = I - (M_f - M_f M_r): removes the directions the forget data uses and the retained data does not."""
    m_r = scaled_energy_projection(gram_r, alpha_r)
    m_f = scaled_energy_projection(gram_f, alpha_f)
    return torch.eye(len(m_f), dtype=m_f.dtype, device=m_f.device) - (m_f - m_f @ m_r)


def sample_indices(ctx: UnlearnContext, samples_per_class: int, forget_samples: int) -> tuple[torch.Tensor, ...]:
    """Up to `samples_per_class` random training samples of each retained class, and `forget_samples` forget ones."""
    generator = torch.Generator().manual_seed(ctx.seed)

    def pick(pool: torch.Tensor, count: int) -> torch.Tensor:
        return pool[torch.randperm(len(pool), generator=generator)[:count]]

    labels = ctx.dataset.train_labels
    retained = ctx.splits.train_r
    retain = torch.cat([pick(retained[labels[retained] == c], samples_per_class)
                        for c in torch.unique(labels[retained]).tolist()])
    return retain, pick(ctx.splits.train_f, forget_samples)


@register("svd", summary="gradient-free: project out the input directions only the forget data uses, per layer",
          data="both", samples=True, defaults={"alpha_r": 100.0, "alpha_f": 3.0, "samples_per_class": 100,
                                 "forget_samples": 900, "batch_size": 64})
def svd_unlearn(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original().eval()
    retain, forget = sample_indices(ctx, hp["samples_per_class"], hp["forget_samples"])
    grams_r = activation_grams(model, ctx.loader(retain, hp["batch_size"], shuffle=False, augment=False))
    grams_f = activation_grams(model, ctx.loader(forget, hp["batch_size"], shuffle=False, augment=False))
    with torch.no_grad():
        for layer in projectable_layers(model):
            projection = forget_removal(grams_r[layer], grams_f[layer], hp["alpha_r"], hp["alpha_f"])
            weight = layer.weight
            projected = weight.flatten(1).double() @ projection.T
            weight.copy_(projected.to(weight.dtype).view(weight.shape))
    return model
