"""The fine-tuning step every training method shares: hyperparameters in, `fastforget.train.fit` called once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from fastforget.train import FitStats, LossFn, fit
from fastforget.unlearn.registry import UnlearnContext

FINETUNE_KEYS = ("epochs", "lr", "momentum", "weight_decay", "batch_size", "schedule")


def finetune(
    ctx: UnlearnContext,
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    hp: dict,
    *,
    params: Sequence[nn.Parameter] | None = None,
    freeze_bn: bool = False,
    grad_masks: dict[nn.Parameter, torch.Tensor] | None = None,
    augment: bool = True,
    desc: str = "unlearn",
) -> FitStats:
    """Fine-tune `model` with the method's hyperparameters on `data`: training-set indices (batched with the
    config's augmentation unless `augment` is off) or a ready loader of `(images, labels, indices)`.

    `hp` must hold epochs, lr, batch_size; momentum (0.9), weight_decay (5e-4), schedule (constant) and amp
    (config's) default when absent.
    """
    loader = ctx.loader(data, hp["batch_size"], augment=augment) if isinstance(data, torch.Tensor) else data
    return fit(model, loader, loss_fn, epochs=hp["epochs"], lr=hp["lr"], params=params,
               momentum=hp.get("momentum", 0.9), weight_decay=hp.get("weight_decay", 5e-4),
               schedule=hp.get("schedule", "constant"), amp=hp.get("amp", ctx.cfg.train.amp),
               freeze_bn=freeze_bn, grad_masks=grad_masks, desc=desc)
