"""Boundary unlearning (Chen et al. 2023): move the forget samples across the original's decision boundary.

`bu` (boundary shrinking): each forget sample x gets the label the frozen original gives its FGSM neighbour
x' = x + bound * sign(grad_x CE(orig(x), y)) (on the normalised input), i.e. its nearest other class; the model
is fine-tuned on CE(model(x), that label). As in the reference code the neighbour's label is taken as is, so
where the attack fails it is the forget class itself and that sample simply reinforces its old label.

`bu-expand` (boundary expanding): a shadow class K is added to the classifier, the forget samples are trained
towards it, and the shadow output is pruned away, leaving the original architecture and class count.

Both follow the reference: SGD with momentum, no weight decay, BatchNorm statistics updating on the forget-only
batches (`freeze_bn=true` keeps them fixed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.models.contract import classifier_name
from fastforget.train import Batch, LossFn
from fastforget.unlearn.common import finetune, finetune_defaults
from fastforget.unlearn.registry import UnlearnContext, register


def adversarial_labels(original: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       bound: float) -> torch.Tensor:
    """The original's prediction on the one-step FGSM neighbour of each image (the nearest class across the
    boundary, or the same class where one step does not cross it)."""
    with torch.enable_grad():
        x = images.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(original(x), labels), x)
    with torch.no_grad():
        return original(images + bound * grad.sign()).argmax(1)


def boundary_shrink_loss(original: nn.Module, bound: float) -> LossFn:
    def loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        targets = adversarial_labels(original, batch.images, batch.labels, bound)
        logits = model(batch.images)
        return F.cross_entropy(logits, targets), logits

    return loss


@register("bu", summary="boundary shrinking: fine-tune forget samples towards the original's FGSM-neighbour label",
          data="forget", samples=True, defaults=finetune_defaults(epochs=10, lr=1e-5, weight_decay=0.0, bound=0.1,
                                                    freeze_bn=False))
def boundary_shrink(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    finetune(ctx, model, boundary_shrink_loss(ctx.original, hp["bound"]), ctx.splits.train_f, hp,
             freeze_bn=hp["freeze_bn"], desc="bu")
    return model


def _replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _widened(head: nn.Linear) -> nn.Linear:
    """`head` with one extra (shadow) output row, freshly initialised; the other rows are copies."""
    k = head.out_features
    wide = nn.Linear(head.in_features, k + 1, bias=head.bias is not None, device=head.weight.device,
                     dtype=head.weight.dtype)
    with torch.no_grad():
        wide.weight[:k].copy_(head.weight)
        if head.bias is not None:
            wide.bias[:k].copy_(head.bias)
    return wide


def shadow_class_loss(shadow: int) -> LossFn:
    def loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch.images)
        return F.cross_entropy(logits, torch.full_like(batch.labels, shadow)), logits

    return loss


@register("bu-expand", summary="boundary expanding: train forget samples into a shadow class, then prune it",
          data="forget", samples=True,
          defaults=finetune_defaults(epochs=10, lr=1e-5, weight_decay=0.0, freeze_bn=False))
def boundary_expand(ctx: UnlearnContext, hp: dict) -> nn.Module:
    model = ctx.copy_original()
    classifier = classifier_name(model, ctx.num_classes)
    head: nn.Linear = model.get_submodule(classifier)
    wide = _widened(head)
    _replace_submodule(model, classifier, wide)
    finetune(ctx, model, shadow_class_loss(head.out_features), ctx.splits.train_f, hp,
             freeze_bn=hp["freeze_bn"], desc="bu-expand")
    with torch.no_grad():  # prune the shadow output: the trained rows go back into the original-sized head
        head.weight.copy_(wide.weight[:head.out_features])
        if head.bias is not None:
            head.bias.copy_(wide.bias[:head.out_features])
    _replace_submodule(model, classifier, head)
    return model
