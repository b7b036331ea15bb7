"""What the training methods share: the one home of their default hyperparameters, the fine-tuning run
(hyperparameters in, `fastforget.train.fit` called once) and the random relabelling that `rl` and `salun` use.

AMP and torch.compile are not hyperparameters: they come from the config (`train.amp`, `train.compile`, which
`fastforget unlearn --compile` sets), like the data loader (`data.loader`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastforget.train import Batch, FitStats, LossFn, SGDSpec, fit
from fastforget.unlearn.registry import UnlearnContext


def finetune_defaults(*, epochs: int, lr: float, **extra: Any) -> dict[str, Any]:
    """The hyperparameters every fine-tuning method exposes (so each can be overridden per data set), with the
    method's own epochs, lr and extras."""
    return {"epochs": epochs, "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
            "schedule": "constant", **extra}


RWFT_DEFAULTS = finetune_defaults(
    epochs=10, lr=0.001,
    reassign="proportional",  # or "max-class"
    freeze_bn=True,           # BN statistics updated on forget-only batches cost RWFT-O 11 points of ACC_r
    augment=True,             # with augmentation the teacher is run per view; without, once per sample
    retain_fraction=0.0,      # share of each batch drawn from D_train_r (target: the original's own output)
)
"""The RWFT family's defaults (SPEC: 10 epochs, SGD lr 0.001, momentum 0.9)."""


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
    """Fine-tune `model` with the method's hyperparameters (`finetune_defaults`' keys) on `data`: training-set
    indices (batched by the config's loader, with its augmentation unless `augment` is off) or a ready loader of
    `(images, labels, indices)`."""
    loader = ctx.loader(data, hp["batch_size"], augment=augment) if isinstance(data, torch.Tensor) else data
    sgd = SGDSpec(lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], schedule=hp["schedule"])
    return fit(model, loader, loss_fn, epochs=hp["epochs"], sgd=sgd, params=params, execution=ctx.execution,
               freeze_bn=freeze_bn, grad_masks=grad_masks, desc=desc)


def retained_classes(forget: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    keep = torch.ones(num_classes, dtype=torch.bool, device=device)
    keep[list(forget)] = False
    return torch.nonzero(keep).flatten()


def random_relabel(labels: torch.Tensor, forget: torch.Tensor, retained: torch.Tensor) -> torch.Tensor:
    """`labels` with every forget-class label replaced by a uniformly drawn retained class (fresh per call)."""
    draws = retained[torch.randint(len(retained), labels.shape, device=labels.device)]
    return torch.where(torch.isin(labels, forget), draws, labels)


def random_label_loss(forget: Sequence[int], num_classes: int, device: torch.device) -> LossFn:
    """Cross-entropy against the batch labels, forget-class labels redrawn at random among the retained classes."""
    forget_t = torch.tensor(list(forget), dtype=torch.long, device=device)
    retained = retained_classes(forget, num_classes, device)

    def loss(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch.images)
        return F.cross_entropy(logits, random_relabel(batch.labels, forget_t, retained)), logits

    return loss


def all_training_indices(ctx: UnlearnContext) -> torch.Tensor:
    return torch.cat((ctx.splits.train_f, ctx.splits.train_r))
