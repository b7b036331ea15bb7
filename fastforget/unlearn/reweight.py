"""What the RWFT family shares: the frozen original as teacher, the reweighted target, and the fine-tuning run on it.

The loss goes through `kernels.reweighted_cross_entropy`'s module, whose dispatch gives CUDA tensors the fused
Triton kernel and everything else the PyTorch reference.

Per step the teacher costs as little as it can:
- it is a copy of the original kept in eval mode, channels-last, without gradients, run in fp32 outside autocast
  (no per-step weight casts; q* is built from fp32 logits);
- where the student's first stages are frozen (RWFT-2-O: conv1..layer2; RW-A: everything before its adapter) and
  BatchNorm statistics stay fixed, those stages compute exactly what the teacher's do: they run once per batch
  and teacher and student both continue from their output;
- without augmentation (`augment=false`, or a config that augments nothing) every step would see the same
  images again, so the teacher's logits (in fp32) and the frozen stages' output are computed once per sample;
- under `train.compile` the whole `loss_fn` (teacher, student, q* and the loss) is one compiled graph (`fit`
  compiles it), the forget mask built beforehand so that nothing in it breaks the graph.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from fastforget import kernels
from fastforget.data import Augment, config_augment
from fastforget.errors import ModelContractError
from fastforget.inference import predict_logits
from fastforget.models.contract import children_listing
from fastforget.train import Batch
from fastforget.unlearn.common import finetune
from fastforget.unlearn.registry import UnlearnContext

PREFIX_CACHE_BYTES = 2 * 2**30
"""Largest per-sample cache of the frozen stages' output; beyond it they run per batch instead."""


def warn_if_label_smoothing(meta: dict) -> None:
    smoothing = meta.get("label_smoothing", 0.0)
    if smoothing:
        warnings.warn(
            f"the original was trained with label smoothing {smoothing}: it flattens the probabilities over the "
            "other classes that RWFT learns from (measured on CIFAR-10: target UTV 0.54 instead of 0.16). "
            "Train the original without it for faithful unlearning.", stacklevel=3)


class Teacher(nn.Module):
    """The frozen original for RWFT: `forward(images) -> (output of its first `shared` stages, logits)`, both fp32.

    It runs outside autocast, in fp32: q* is built from fp32 logits, and a bf16 teacher moves q* by about 1e-2
    (measured on the digits CNN), more than the reweighting's own detail. A model without `run` (no named
    stages) shares nothing.
    """

    def __init__(self, original: nn.Module, *, device: torch.device, shared: int = 0) -> None:
        super().__init__()
        self.model = copy.deepcopy(original).to(device, memory_format=torch.channels_last).eval()
        self.model.requires_grad_(False)
        self.shared = shared if hasattr(self.model, "run") else 0

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The output of the shared (frozen) stages, or the images when nothing is shared."""
        with torch.autocast(images.device.type, enabled=False):
            return self.model.run(images.float(), 0, self.shared) if self.shared else images.float()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.prefix(images)
        with torch.autocast(images.device.type, enabled=False):
            return shared, self.model.run(shared, self.shared) if self.shared else self.model(shared)


class FromStage(nn.Module):
    """The student from its stage `start` on: what it computes from the shared stages' output."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.model, self.start = model, start

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        return self.model.run(shared, self.start)


def frozen_stages(model: nn.Module, params: Sequence[nn.Parameter]) -> int:
    """How many leading stages of `model` hold none of the trained `params` (0 for a model without stages)."""
    if not getattr(model, "stages", ()):
        return 0
    trained = {id(p) for p in params}
    count = 0
    for module in model.stage_modules():
        if any(id(p) in trained for p in module.parameters()):
            break
        count += 1
    return count


class PerSample:
    """Values computed once for the training samples at `positions`, looked up by position on the device."""

    def __init__(self, positions: torch.Tensor, values: torch.Tensor, size: int) -> None:
        self.slot = torch.full((size,), -1, dtype=torch.long, device=values.device)
        self.slot[positions.to(values.device)] = torch.arange(len(positions), device=values.device)
        self.values = values

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.values[self.slot[rows]]


@torch.no_grad()
def _prefix_outputs(ctx: UnlearnContext, teacher: Teacher, positions: torch.Tensor,
                    batch_size: int) -> PerSample | None:
    """The shared stages' output for each sample at `positions` (un-augmented), or None where keeping it would
    take more than `PREFIX_CACHE_BYTES`."""
    parts, seen = [], []
    for images, _, indices in ctx.loader(positions, batch_size, shuffle=False, augment=False):
        parts.append(teacher.prefix(images))
        seen.append(indices)
        if parts[0][0].numel() * parts[0].element_size() * len(positions) > PREFIX_CACHE_BYTES:
            return None
    outputs = torch.cat(parts).contiguous(memory_format=torch.channels_last)
    return PerSample(torch.cat(seen), outputs, len(ctx.dataset.train_labels))


class MixedLoader:
    """Forget batches with a share of retained samples appended; one pass = one pass over the forget set.

    The first `len(batch) - retain_size` rows of every batch are forget samples, the last `retain_size` retained.
    """

    def __init__(self, ctx: UnlearnContext, batch_size: int, retain_fraction: float, augment: bool) -> None:
        self.retain_size = max(1, round(batch_size * retain_fraction))
        forget_size = max(1, batch_size - self.retain_size)
        self.forget = ctx.loader(ctx.splits.train_f, forget_size, augment=augment)
        self.retain = ctx.loader(ctx.splits.train_r, self.retain_size, augment=augment, drop_last=True)
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


def _mixed_loss(criterion_sum: nn.Module, retain_size: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean over the batch of the reweighted loss on its forget rows and, on its retained rows, the
    cross-entropy against the original's own output (the rows' kinds are fixed by `MixedLoader`)."""
    def loss(student: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        split = len(student) - retain_size
        forget_part = criterion_sum(student[:split], teacher_logits[:split])
        retain_part = kernels.soft_target_cross_entropy(student[split:], teacher_logits[split:].softmax(1),
                                                        reduction="sum")
        return (forget_part + retain_part) / len(student)

    return loss


def reweight_finetune(ctx: UnlearnContext, model: nn.Module, hp: dict, *,
                      params: Sequence[nn.Parameter], desc: str) -> nn.Module:
    """Fine-tune `params` of `model` towards the original's reweighted prediction on forget samples."""
    warn_if_label_smoothing(ctx.meta)
    mixing = hp["retain_fraction"] > 0
    data = MixedLoader(ctx, hp["batch_size"], hp["retain_fraction"], hp["augment"]) if mixing \
        else ctx.loader(ctx.splits.train_f, hp["batch_size"], augment=hp["augment"])
    # built once, its forget mask too (no per-step sync, nothing for torch.compile to break its graph on); it
    # also rejects an unknown `reassign`
    criterion = kernels.ReweightedCrossEntropyLoss(ctx.forget, hp["reassign"], reduction="sum" if mixing else "mean",
                                                   teacher_is_probs=False)
    criterion.forget_mask(ctx.dataset.num_classes, ctx.device)
    objective = _mixed_loss(criterion, data.retain_size) if mixing else criterion
    shared = frozen_stages(model, params) if hp["freeze_bn"] else 0
    teacher = Teacher(ctx.original, device=ctx.device, shared=shared)
    shared = teacher.shared
    student = FromStage(model, shared) if shared else model

    logit_table = prefix_table = None
    if not (hp["augment"] and config_augment(ctx.cfg) != Augment()):  # every step would see the same images
        used = torch.cat([ctx.splits.train_f, ctx.splits.train_r]) if mixing else ctx.splits.train_f
        exact = predict_logits(ctx.original, ctx.dataset.train_images[used], ctx.dataset, device=ctx.device)
        logit_table = PerSample(used, exact.to(ctx.device), len(ctx.dataset.train_labels))
        if shared:
            prefix_table = _prefix_outputs(ctx, teacher, used, hp["batch_size"])

    def loss_fn(net: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            if logit_table is None:
                features, teacher_logits = teacher(batch.images)
            else:
                teacher_logits = logit_table[batch.indices]
                features = prefix_table[batch.indices] if prefix_table is not None else teacher.prefix(batch.images)
        logits = net(features)
        return objective(logits, teacher_logits), logits

    finetune(ctx, student, loss_fn, data, hp, params=params, freeze_bn=hp["freeze_bn"], desc=desc)
    return model


def block_parameters(model: nn.Module, blocks: Sequence[str]) -> list[nn.Parameter]:
    """The parameters of the named (dotted) modules, each once, with a clear error for a name the model lacks."""
    names = dict(model.named_modules())
    missing = [b for b in blocks if b not in names]
    if missing:
        raise ModelContractError(f"{type(model).__name__} has no block(s) {missing}; its top-level children: "
                                 f"{children_listing(model)}")
    return list({id(p): p for b in blocks for p in names[b].parameters()}.values())
