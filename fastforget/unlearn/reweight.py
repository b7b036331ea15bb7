"""What the RWFT family shares: the reweighted target from the frozen original, and the fine-tuning run on it.

The loss goes through `kernels.reweighted_cross_entropy`, whose dispatch gives CUDA tensors the fused Triton
kernel and everything else the PyTorch reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from fastforget.train import Batch, predict_logits
from fastforget.unlearn.common import finetune
from fastforget.unlearn.registry import UnlearnContext

RWFT_DEFAULTS = {
    "epochs": 10, "lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
    "reassign": "proportional",  # or "max-class"
    "freeze_bn": True,           # BN statistics updated on forget-only batches cost RWFT-O 11 points of ACC_r
    "augment": True,             # with augmentation the teacher is run per view; without, once per sample
    "retain_fraction": 0.0,      # share of each batch drawn from D_train_r (target: the original's own output)
}


def warn_if_label_smoothing(meta: dict) -> None:
    smoothing = meta.get("label_smoothing", 0.0)
    if smoothing:
        warnings.warn(
            f"the original was trained with label smoothing {smoothing}: it flattens the probabilities over the "
            "other classes that RWFT learns from (measured on CIFAR-10: target UTV 0.54 instead of 0.16). "
            "Train the original without it for faithful unlearning.", stacklevel=3)


class MixedLoader:
    """Forget batches with a share of retained samples appended; one pass = one pass over the forget set."""

    def __init__(self, ctx: UnlearnContext, batch_size: int, retain_fraction: float, augment: bool) -> None:
        retain_size = max(1, round(batch_size * retain_fraction))
        forget_size = max(1, batch_size - retain_size)
        self.forget = ctx.loader(ctx.splits.train_f, forget_size, augment=augment)
        self.retain = ctx.loader(ctx.splits.train_r, retain_size, augment=augment, drop_last=True)
        self._retain_iter = iter(self.retain)

    def __len__(self) -> int:
        return len(self.forget)

    def _next_retain(self) -> tuple:
        try:
            return next(self._retain_iter)
        except StopIteration:
            self._retain_iter = iter(self.retain)
            return next(self._retain_iter)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for forget_batch in self.forget:
            retain_batch = self._next_retain()
            yield tuple(torch.cat([f, r]) for f, r in zip(forget_batch, retain_batch, strict=True))


def reweight_finetune(ctx: UnlearnContext, model: nn.Module, hp: dict, *,
                      params: Sequence[nn.Parameter], desc: str) -> nn.Module:
    """Fine-tune `params` of `model` towards the original's reweighted prediction on forget samples."""
    warn_if_label_smoothing(ctx.meta)
    forget = torch.tensor(ctx.forget, device=ctx.device)
    # built once (forget mask cached); it also rejects an unknown `reassign`
    criterion = kernels.ReweightedCrossEntropyLoss(ctx.forget, hp["reassign"])
    teacher = ctx.original
    mixing = hp["retain_fraction"] > 0
    table = None
    if not hp["augment"]:  # one teacher pass in fp32 over the samples that will be seen
        used = torch.cat([ctx.splits.train_f, ctx.splits.train_r]) if mixing else ctx.splits.train_f
        table = torch.zeros(len(ctx.dataset.train_labels), ctx.num_classes, device=ctx.device)
        table[used.to(ctx.device)] = predict_logits(teacher, ctx.dataset.train_images[used], ctx.dataset).to(ctx.device)

    def loss_fn(net: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        if table is not None:
            teacher_logits = table[batch.indices.to(ctx.device)]
        else:
            with torch.no_grad():
                teacher_logits = teacher(batch.images)
        student = net(batch.images)
        if not mixing:
            return criterion(student, teacher_logits), student
        is_forget = torch.isin(batch.labels, forget).unsqueeze(1)
        target = torch.where(is_forget, kernels.reweighted_target(teacher_logits.float(), forget, hp["reassign"]),
                             F.softmax(teacher_logits.float(), dim=1))
        return kernels.soft_target_cross_entropy(student, target), student

    data = MixedLoader(ctx, hp["batch_size"], hp["retain_fraction"], hp["augment"]) if mixing \
        else ctx.loader(ctx.splits.train_f, hp["batch_size"], augment=hp["augment"])
    finetune(ctx, model, loss_fn, data, hp, params=params, freeze_bn=hp["freeze_bn"], desc=desc)
    return model


def block_parameters(model: nn.Module, blocks: Sequence[str]) -> list[nn.Parameter]:
    """The parameters of the named sub-blocks, with a clear error for a name the model does not have."""
    names = dict(model.named_children())
    missing = [b for b in blocks if b not in names]
    if missing:
        raise ValueError(f"{type(model).__name__} has no block(s) {missing}; its blocks are {list(names)}")
    return [p for b in blocks for p in names[b].parameters()]
