"""The one training loop (`fit`) and the recipe that trains originals, retrained and shadow models.

Every unlearning method that trains calls `fit` with its own loss and parameter set; nothing else in fastforget
writes an optimisation loop.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fastforget.checkpoint import save_checkpoint
from fastforget.config import Config, TrainRecipe
from fastforget.data import Augment, ImageDataset, InMemoryLoader, data_fingerprint, load_dataset, resolve_classes
from fastforget.data.ffcv import ffcv_available, ffcv_loader
from fastforget.data.sources import cache_dir
from fastforget.errors import ConfigError, TrainingDivergedError, UnknownClassError
from fastforget.models import build_model
from fastforget.runtime import (
    amp_dtype,
    autocast,
    environment,
    progress_enabled,
    resolve_device,
    seed_everything,
)


class Batch(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


LossFn = Callable[[nn.Module, Batch, float], tuple[torch.Tensor, torch.Tensor | None]]
"""loss_fn(model, batch, progress in [0, 1)) -> (scalar loss, logits for the progress bar's accuracy, or None)."""


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


def fit(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float,
    params: Sequence[nn.Parameter] | None = None,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    step_size: int = 40,
    gamma: float = 0.1,
    amp: bool = True,
    compile: bool = False,
    freeze_bn: bool = False,
    grad_masks: dict[nn.Parameter, torch.Tensor] | None = None,
    desc: str = "train",
) -> FitStats:
    """Optimise `params` (default: all) of `model` with SGD on `loss_fn` over `loader` for `epochs`.

    Weight decay enters through the gradient (as in torch's SGD) *before* `grad_masks` multiply it, so a weight
    whose mask is 0 keeps its exact value: no decay, no momentum. Parameters outside `params` are frozen for the
    run (no gradients computed) and get their flags back afterwards. `freeze_bn` keeps BatchNorm running
    statistics fixed, which fine-tuning on forget-only batches needs.
    """
    device = next(model.parameters()).device
    params = list(model.parameters()) if params is None else list(params)
    if not params:
        raise ValueError("fit() got no parameters to train")
    trainable = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    steps_per_epoch = len(loader)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule, total, steps_per_epoch, step_size, gamma))
    scaler = torch.amp.GradScaler(device.type) if amp and amp_dtype(device) == torch.float16 else None
    forward = torch.compile(model) if compile else model
    model.train()
    if freeze_bn:
        _freeze_batchnorm_stats(model)

    bar = tqdm(total=total, desc=desc, disable=not progress_enabled(), leave=False, unit="step")
    step, images, last_loss, start = 0, 0, float("nan"), time.perf_counter()
    running_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    try:
        for epoch in range(epochs):
            for raw in loader:
                batch = Batch(*raw)
                with autocast(device, amp):
                    loss, logits = loss_fn(forward, batch, step / max(1, total))
                optimizer.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                with torch.no_grad():
                    for p in params:
                        if p.grad is None:
                            continue
                        if weight_decay:
                            p.grad.add_(p, alpha=weight_decay)
                        if grad_masks is not None and p in grad_masks:
                            p.grad.mul_(grad_masks[p])
                (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
                scheduler.step()
                step += 1
                images += batch.labels.numel()
                running_loss += loss.detach().float()
                if logits is not None:
                    correct += (logits.detach().argmax(1) == batch.labels).sum()
                if step % 10 == 0 or step == total or device.type == "cpu":
                    last_loss = _check_finite(running_loss, step, epoch, desc)
                    bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{100 * correct.item() / images:.1f}",
                                    img_s=f"{images / (time.perf_counter() - start):.0f}", refresh=False)
                    bar.update(step - bar.n)
    finally:
        bar.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    last_loss = _check_finite(running_loss, step, epochs - 1, desc) if step else last_loss
    return FitStats(steps=step, images=images, seconds=time.perf_counter() - start, final_loss=last_loss)


def _check_finite(running_loss: torch.Tensor, step: int, epoch: int, desc: str) -> float:
    value = running_loss.item() / max(1, step)
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{desc}: the loss became {value} by step {step} (epoch {epoch + 1}); lower the learning rate "
            "(e.g. train.lr=0.01 or the method's lr=...) or turn off AMP (train.amp=false)")
    return value


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, dataset: ImageDataset, *, batch_size: int = 512,
                   device: torch.device | None = None, amp: bool = False) -> torch.Tensor:
    """Logits of `model` on uint8 images, in fp32 on the CPU, in the order given (eval mode, no augmentation)."""
    device = device or next(model.parameters()).device
    labels = torch.zeros(len(images), dtype=torch.long)
    loader = InMemoryLoader(images, labels, batch_size=batch_size, shuffle=False, mean=dataset.mean,
                            std=dataset.std, device=device)
    was_training = model.training
    model.eval()
    outs = []
    for x, _, _ in loader:
        with autocast(device, amp):
            outs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")


def ffcv_train_file(dataset: ImageDataset) -> Path:
    """The data set's training split as a .beton in the cache, written on first use (keyed by its content)."""
    from fastforget.data.ffcv import write_beton

    stride = max(1, len(dataset.train_labels) // 1000)
    digest = hashlib.sha1(dataset.train_labels.numpy().tobytes())
    digest.update(dataset.train_images[::stride].numpy().tobytes())
    path = cache_dir() / "ffcv" / f"{dataset.name}-{digest.hexdigest()[:12]}" / "train.beton"
    if not path.is_file():
        write_beton(dataset.train_images, dataset.train_labels, path)
    return path


def config_augment(cfg: Config) -> Augment:
    """The training augmentation a config asks for (`data.crop_padding`, `data.flip`)."""
    return Augment(crop_padding=cfg.data.get("crop_padding", 0), flip=cfg.data.get("flip", False))


def make_train_loader(dataset: ImageDataset, cfg: Config, *, indices: torch.Tensor | None, batch_size: int,
                      device: torch.device, seed: int, shuffle: bool = True, augment: bool = True) -> Iterable:
    """The config's loader (`data.loader`: memory or ffcv) over the training samples at `indices`."""
    options = dict(batch_size=batch_size, shuffle=shuffle, augment=config_augment(cfg) if augment else Augment(),
                   mean=dataset.mean, std=dataset.std, device=device, drop_last=shuffle, seed=seed, indices=indices)
    kind = cfg.data.get("loader", "memory")
    if kind == "ffcv":
        if ffcv_available():
            return ffcv_loader(ffcv_train_file(dataset), **options)
        warnings.warn("data.loader = 'ffcv' but FFCV is not installed here: using the in-memory loader "
                      "(scripts/setup.sh installs FFCV where apt is available)", stacklevel=2)
    elif kind != "memory":
        raise ConfigError(f"data.loader must be 'memory' or 'ffcv', not {kind!r}")
    return InMemoryLoader(dataset.train_images, dataset.train_labels, **options)


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
) -> TrainedModel:
    """Train a model with the config's recipe: the original, or (with `exclude`) the retrained gold standard.

    `train_indices` restricts training to a subset (shadow and reference models of the membership attacks).
    """
    recipe: TrainRecipe = cfg.train
    seed = recipe.seed if seed is None else seed
    epochs = recipe.epochs if epochs is None else epochs
    device = resolve_device(recipe.device)
    seed_everything(seed)
    dataset = dataset or load_dataset(cfg.data["name"], cfg.data.get("root") or None)
    excluded = resolve_classes(list(exclude), dataset.classes)
    if len(excluded) >= dataset.num_classes:
        raise UnknownClassError(f"cannot exclude every class ({len(excluded)} of {dataset.num_classes}): nothing would "
                                "be left to train on; keep at least one class")
    keep = ~torch.isin(dataset.train_labels, torch.tensor(excluded, dtype=torch.long))
    pool = torch.nonzero(keep).flatten()
    if train_indices is not None:
        pool = pool[torch.isin(pool, train_indices)]
    model = build_model(cfg.model["arch"], dataset.num_classes, dataset.in_channels, **cfg.arch_args).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_train_loader(dataset, cfg, indices=pool, batch_size=recipe.batch_size, device=device, seed=seed)

    def cross_entropy(net: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels, label_smoothing=recipe.label_smoothing), logits

    label = desc or ("retrain" if excluded else "train")
    stats = fit(model, loader, cross_entropy, epochs=epochs, lr=recipe.lr, momentum=recipe.momentum,
                weight_decay=recipe.weight_decay, schedule=recipe.schedule, step_size=recipe.step_size,
                gamma=recipe.gamma, amp=recipe.amp, compile=recipe.compile, desc=label)
    model.eval()
    logits = predict_logits(model, dataset.test_images, dataset)
    retained = ~torch.isin(dataset.test_labels, torch.tensor(excluded, dtype=torch.long))
    meta = {
        "arch": cfg.model["arch"],
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
    if out_dir is not None:
        save_checkpoint(out_dir, model, meta)
    return TrainedModel(model=model, meta=meta)
