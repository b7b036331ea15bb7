"""The one training loop (`fit`) and the recipe that trains originals, retrained and shadow models.

Every unlearning method that trains calls `fit` with its own loss and parameter set; nothing else in fastforget
writes an optimisation loop. The loop keeps the device busy: no host synchronisation per step (the progress bar
reads device-side counters at its refresh interval only), one fused SGD step for all parameters, and with
`compile` the whole forward of a step (the method's loss function: teacher, student, loss and its gradient, which
the backward then runs compiled) as one compiled graph per (method, shape), reused by every later run in the
process.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fastforget import curves, distributed
from fastforget.checkpoint import save_checkpoint
from fastforget.config import Config, TrainRecipe
from fastforget.data import ImageDataset, config_dataset, data_fingerprint, make_train_loader, resolve_classes
from fastforget.errors import ConfigError, TrainingDivergedError, UnknownClassError
from fastforget.inference import accuracy, predict_logits
from fastforget.models import build_model
from fastforget.runtime import amp_dtype, autocast, environment, progress_enabled, resolve_device, seed_everything

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


LossFn = Callable[[nn.Module, Batch, float | torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""loss_fn(model, batch, progress in [0, 1)) -> (scalar loss, logits for the progress bar's accuracy, or None).

`progress` is a float, or under `compile` a 0-d float32 tensor on the model's device holding the same value
(compiled, a float would become a constant of the graph: one recompile per step); use it in arithmetic only."""


@dataclass(frozen=True)
class SGDSpec:
    """The optimiser and its learning-rate schedule: SGD with momentum, weight decay through the gradient."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant, step (StepLR in epochs), onecycle or linear
    step_size: int = 40
    gamma: float = 0.1

    @classmethod
    def from_recipe(cls, recipe: TrainRecipe) -> SGDSpec:
        return cls(lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                   schedule=recipe.schedule, step_size=recipe.step_size, gamma=recipe.gamma)


@dataclass(frozen=True)
class ExecSpec:
    """How the steps run: AMP (bf16 where supported, else fp16 with a grad scaler) and torch.compile."""

    amp: bool = True
    compile: bool = False


@dataclass
class FitStats:
    steps: int
    images: int
    seconds: float
    final_loss: float


def lr_lambda(schedule: str, total_steps: int, steps_per_epoch: int, step_size: int,
              gamma: float) -> Callable[[int], float]:
    """Learning-rate multiplier per optimiser step."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "step":  # torch StepLR in epochs, as in the paper
        return lambda step: gamma ** ((step // max(1, steps_per_epoch)) // step_size)
    if schedule == "onecycle":  # linear warm-up over 15% of the steps, then linear decay to zero
        warm = max(1, int(0.15 * total_steps))
        return lambda step: (0.1 + 0.9 * step / warm) if step < warm else max(
            0.0, (total_steps - step) / max(1, total_steps - warm))
    if schedule == "linear":
        return lambda step: max(0.0, 1.0 - step / max(1, total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; choose constant, step, onecycle or linear")


def _freeze_batchnorm_stats(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@functools.cache
def prepare_process() -> None:
    """Pay the loop's one-time process costs, so that a timed run does not: the first `torch.optim` optimiser of
    a process imports torch._dynamo (about a second)."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)


RECOMPILE_LIMIT = 64
"""Compiled variants kept per loss function: one per method shape (architecture, which parameters train,
train/eval BatchNorm, batch size), so that a whole grid stays compiled (torch's default of 8 would fall back to
eager mid-grid)."""


COMPILE_BACKEND = "inductor"
"""torch.compile's backend; the tests use "eager" (the same graph capture, guards and recompiles, no code
generation, which takes a minute per model on a small CPU)."""

COMPILE_MODE: str | None = None
"""torch.compile's mode. "reduce-overhead" adds CUDA graphs, which pay where a run's shapes are static (drop_last
loaders: one batch shape) and the step is launch-bound; bench/gpu/60_loop.py measures it against plain compile."""


def compiled(loss_fn: LossFn) -> LossFn:
    """`loss_fn` under torch.compile, static shapes: the model it calls, the teacher and the loss are traced into
    one graph (TorchDynamo follows the calls). Compiled code is cached per loss function (its code, not its
    closure) and shape, not per run: a fresh copy of the same architecture trained the same way reuses it without
    compiling again."""
    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, RECOMPILE_LIMIT)
    config.accumulated_cache_size_limit = max(config.accumulated_cache_size_limit, 4 * RECOMPILE_LIMIT)
    return torch.compile(loss_fn, dynamic=False, backend=COMPILE_BACKEND, mode=COMPILE_MODE)


def _optimizer(params: list[nn.Parameter], sgd: SGDSpec, *, decay_in_optimizer: bool) -> torch.optim.SGD:
    """Fused SGD (one kernel over every parameter) where torch has it for the device, else foreach."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.SGD(params, lr=sgd.lr, momentum=sgd.momentum,
                           weight_decay=sgd.weight_decay if decay_in_optimizer else 0.0,
                           fused=fused or None, foreach=None if fused else True)


PROGRESS_INTERVAL_S = 0.5
"""How often the loop reads its loss on the host (progress bar, divergence check)."""


class _Progress:
    """Loss (and, with the bar shown, accuracy) summed on the device; read on the host every
    `PROGRESS_INTERVAL_S` only, for the bar and the divergence check. On CUDA the read is an asynchronous copy
    collected at the next interval, so the loop never waits for the device."""

    def __init__(self, total: int, desc: str, device: torch.device) -> None:
        shown = progress_enabled() and distributed.is_main()
        self.reads = shown or not distributed.active()  # under DDP only rank 0 reads, and never raises (see fit)
        self.bar = tqdm(total=total, desc=desc, disable=not shown, leave=False, unit="step")
        self.device, self.desc, self.interval = device, desc, PROGRESS_INTERVAL_S
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.count_correct = shown or curves.active()
        self.curve = (curves.run_tag(desc), (0.0, 0.0, 0, 0)) if curves.active() else None
        self.host = torch.zeros(2, pin_memory=device.type == "cuda")
        self.copied: torch.cuda.Event | None = None
        self.snapshot = (0, 0)  # step and images at the last asynchronous copy
        self.next_read = time.perf_counter() + self.interval
        self.start = time.perf_counter()
        self.images = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor, step: int,
               epoch: int) -> None:
        self.loss_sum.add_(loss.detach())
        if self.count_correct and logits is not None:
            self.correct.add_((logits.detach().argmax(1) == labels).sum())
        self.images += labels.numel()
        now = time.perf_counter()
        if now < self.next_read or not self.reads:
            return
        self.next_read = now + self.interval
        if self.device.type != "cuda":
            self._show([self.loss_sum.item(), self.correct.item() if self.count_correct else 0], step, self.images,
                       epoch)
            return
        if self.copied is not None and self.copied.query():
            self._show(self.host.tolist(), *self.snapshot, epoch)
        if self.copied is None or self.copied.query():
            self.host[0].copy_(self.loss_sum, non_blocking=True)
            self.host[1].copy_(self.correct, non_blocking=True)
            self.copied, self.snapshot = torch.cuda.Event(), (step, self.images)
            self.copied.record()

    def _show(self, sums: list[float], step: int, images: int, epoch: int) -> None:
        loss = sums[0] / max(1, step) if distributed.active() else _finite_mean_loss(sums[0], step, epoch, self.desc)
        postfix = {"loss": f"{loss:.4f}", "img_s": f"{images / (time.perf_counter() - self.start):.0f}"}
        if self.count_correct:
            postfix["acc"] = f"{100 * sums[1] / max(1, images):.1f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(step - self.bar.n)
        if self.curve is not None and step > self.curve[1][2]:  # the mean since the last read
            tag, (loss_before, correct_before, step_before, images_before) = self.curve
            curves.scalar(f"{tag}/loss", (sums[0] - loss_before) / (step - step_before), step)
            curves.scalar(f"{tag}/accuracy", 100 * (sums[1] - correct_before) / max(1, images - images_before), step)
            self.curve = tag, (sums[0], sums[1], step, images)

    def check_all_ranks(self, step: int, epoch: int) -> float:
        """The mean loss so far over every step and rank, checked to be finite on every rank at once (under DDP
        a rank that stopped alone would leave the others waiting in the next all-reduce)."""
        total = distributed.mean_over_ranks(self.loss_sum).item()
        return _finite_mean_loss(total, step, epoch, self.desc) if step else float("nan")

    def finish(self, step: int, epoch: int) -> float:
        """The mean loss over every step and rank (one host read), checked to be finite; the curve's last point."""
        if step and self.curve is not None:
            self._show([self.loss_sum.item(), self.correct.item()], step, self.images, epoch)
        return self.check_all_ranks(step, epoch)


def _finite_mean_loss(total: float, step: int, epoch: int, desc: str) -> float:
    value = total / max(1, step)
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{desc}: the loss became {value} by step {step} (epoch {epoch + 1}); lower the learning rate "
            "(e.g. train.lr=0.01 or the method's lr=...) or turn off AMP (train.amp=false)")
    return value


def fit(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    *,
    epochs: int,
    sgd: SGDSpec,
    params: Sequence[nn.Parameter] | None = None,
    execution: ExecSpec = ExecSpec(),
    freeze_bn: bool = False,
    grad_masks: dict[nn.Parameter, torch.Tensor] | None = None,
    desc: str = "train",
) -> FitStats:
    """Optimise `params` (default: all) of `model` with SGD on `loss_fn` over `loader` for `epochs`.

    Weight decay enters through the gradient (as in torch's SGD) *before* `grad_masks` multiply it, so a weight
    whose mask is 0 keeps its exact value: no decay, no momentum. Parameters outside `params` are frozen for the
    run (no gradients computed) and get their flags back afterwards. `freeze_bn` keeps BatchNorm running
    statistics fixed, which fine-tuning on forget-only batches needs. On CUDA cuDNN benchmarks its algorithms
    once per shape (the shapes of a run are static: one batch size, at most one ragged last batch).

    Under torchrun (a process group of several ranks) the model runs as DistributedDataParallel: each rank's
    loader yields its share of the global batch, gradients are averaged over ranks during the backward, and
    weight decay and `grad_masks` then apply to identical gradients on every rank; the loss is checked for
    divergence on all ranks together at each epoch's end.
    """
    device = next(model.parameters()).device
    params = list(model.parameters()) if params is None else list(params)
    if not params:
        raise ValueError("fit() got no parameters to train")
    trainable = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(id(p) in trainable)
    masked = [(p, grad_masks[p]) for p in params if p in grad_masks] if grad_masks else []
    optimizer = _optimizer(params, sgd, decay_in_optimizer=not masked)
    steps_per_epoch = len(loader)
    total = epochs * steps_per_epoch
    multiplier = lr_lambda(sgd.schedule, total, steps_per_epoch, sgd.step_size, sgd.gamma)
    scaler = torch.amp.GradScaler(device.type) if execution.amp and amp_dtype(device) == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    forward = _data_parallel(model) if distributed.active() else model
    step_loss = compiled(loss_fn) if execution.compile else loss_fn
    progress_now = torch.zeros((), device=device) if execution.compile else None
    model.train()
    if freeze_bn:
        _freeze_batchnorm_stats(model)

    progress = _Progress(total, desc, device)
    step, epoch = 0, 0
    try:
        for epoch in range(epochs):
            for raw in loader:
                batch = Batch(*raw)
                for group in optimizer.param_groups:
                    group["lr"] = sgd.lr * multiplier(step)
                done = step / max(1, total)
                with autocast(device, execution.amp):
                    loss, logits = step_loss(forward, batch, done if progress_now is None else
                                             progress_now.fill_(done))
                optimizer.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                if masked:
                    _decay_then_mask(params, masked, sgd.weight_decay)
                (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
                step += 1
                progress.update(loss, logits, batch.labels, step, epoch)
            if distributed.active():
                progress.check_all_ranks(step, epoch)
        final_loss = progress.finish(step, epoch)
    finally:
        progress.bar.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    return FitStats(steps=step, images=progress.images, seconds=time.perf_counter() - progress.start,
                    final_loss=final_loss)


def _data_parallel(model: nn.Module) -> nn.Module:
    """`model` under DistributedDataParallel (rank 0's weights broadcast first); the gradient all-reduce averages
    the ranks' mean losses, which over equal shards of the global batch is the global batch's mean."""
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


@torch.no_grad()
def _decay_then_mask(params: list[nn.Parameter], masked: list[tuple[nn.Parameter, torch.Tensor]],
                     weight_decay: float) -> None:
    """grad += weight_decay * p, then grad *= mask: a masked-out weight gets a zero gradient, decay included."""
    with_grad = [p for p in params if p.grad is not None]
    if weight_decay and with_grad:
        torch._foreach_add_([p.grad for p in with_grad], with_grad, alpha=weight_decay)
    masked = [(p, mask) for p, mask in masked if p.grad is not None]
    if masked:
        torch._foreach_mul_([p.grad for p, _ in masked], [mask for _, mask in masked])


@dataclass
class TrainedModel:
    model: nn.Module
    meta: dict


def train_model(
    cfg: Config,
    *,
    exclude: Sequence[str | int] = (),
    seed: int | None = None,
    epochs: int | None = None,
    out_dir: str | Path | None = None,
    dataset: ImageDataset | None = None,
    train_indices: torch.Tensor | None = None,
    desc: str | None = None,
    sync_batchnorm: bool = False,
    model: nn.Module | None = None,
) -> TrainedModel:
    """Train a model with the config's recipe: the original, or (with `exclude`) the retrained gold standard.

    `train_indices` restricts training to a subset (shadow and reference models of the membership attacks);
    `model` is an untrained model to train instead of the config's architecture (a user's own module).
    Under torchrun every rank trains its share of each global batch; rank 0 alone evaluates and saves (the other
    ranks return their model, identical to rank 0's, with an empty sidecar). `sync_batchnorm` (CUDA, DDP)
    computes BatchNorm statistics over the global batch instead of each rank's share.
    """
    recipe: TrainRecipe = cfg.train
    seed = recipe.seed if seed is None else seed
    epochs = recipe.epochs if epochs is None else epochs
    device = resolve_device(recipe.device)
    seed_everything(seed)
    dataset = dataset or config_dataset(cfg)
    excluded = resolve_classes(list(exclude), dataset.classes)
    if len(excluded) >= dataset.num_classes:
        raise UnknownClassError(f"cannot exclude every class ({len(excluded)} of {dataset.num_classes}): nothing would "
                                "be left to train on; keep at least one class")
    keep = ~torch.isin(dataset.train_labels, torch.tensor(excluded, dtype=torch.long))
    pool = torch.nonzero(keep).flatten()
    if train_indices is not None:
        pool = pool[torch.isin(pool, train_indices)]
    arch = cfg.model["arch"] if model is None else f"module:{type(model).__name__}"
    model = (model or build_model(arch, dataset.num_classes, dataset.in_channels, **cfg.arch_args)).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if sync_batchnorm:
        if not (distributed.active() and device.type == "cuda"):
            raise ConfigError("--sync-bn needs data-parallel training on CUDA (--ddp under torchrun on GPUs)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loader = make_train_loader(dataset, cfg, indices=pool, batch_size=recipe.batch_size, device=device, seed=seed)

    def cross_entropy(net: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels, label_smoothing=recipe.label_smoothing), logits

    label = desc or ("retrain" if excluded else "train")
    stats = fit(model, loader, cross_entropy, epochs=epochs, sgd=SGDSpec.from_recipe(recipe),
                execution=ExecSpec(amp=recipe.amp, compile=recipe.compile), desc=label)
    model.eval()
    if not distributed.is_main():
        return TrainedModel(model=model, meta={})
    logits = predict_logits(model, dataset.test_images, dataset)
    retained = ~torch.isin(dataset.test_labels, torch.tensor(excluded, dtype=torch.long))
    meta = {
        "arch": arch,
        "arch_args": {**cfg.arch_args, "in_channels": dataset.in_channels},
        "dataset": dataset.name,
        "image_size": dataset.image_size,
        "classes": dataset.classes,
        "excluded": excluded,
        "excluded_names": [dataset.classes[i] for i in excluded],
        "forget": [],
        "seed": seed,
        "epochs": epochs,
        "recipe": asdict(recipe) | {"epochs": epochs},
        "label_smoothing": recipe.label_smoothing,
        "train_size": int(len(pool)),
        "test_accuracy": accuracy(logits, dataset.test_labels),
        "test_accuracy_retained": accuracy(logits[retained], dataset.test_labels[retained]),
        "train_seconds": stats.seconds,
        "images_per_second": stats.images / max(stats.seconds, 1e-9),
        "config": cfg.raw,
        "data_fingerprint": data_fingerprint(dataset),
        "versions": environment(device),
    }
    if distributed.active():
        meta["data_parallel"] = {"world_size": distributed.shard().world, "backend": torch.distributed.get_backend(),
                                 "sync_batchnorm": sync_batchnorm}
    log.info("%s: %s on %s, %d epochs, %.1f s, test accuracy %.2f%%", label, arch, dataset.name, epochs,
             stats.seconds, meta["test_accuracy"])
    if out_dir is not None:
        save_checkpoint(out_dir, model, meta)
    return TrainedModel(model=model, meta=meta)
