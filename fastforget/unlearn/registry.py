"""The method registry: every unlearning method is one file that registers one function here.

A method is `fn(ctx: UnlearnContext, hp: dict) -> nn.Module`: it gets the original model (which it must not
modify), the data and the forget classes, and returns the unlearned model. `run_method` merges hyperparameters
(method defaults <- config `[unlearn.NAME]` <- command line), times the call (device synchronised) and measures
peak memory, so every method reports the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastforget.config import SCHEDULES, Config, Rule, check_value, did_you_mean
from fastforget.data import ForgetSplits, ImageDataset, make_train_loader
from fastforget.errors import ConfigError, ConfigValueError, FastForgetError
from fastforget.runtime import measure, seed_everything
from fastforget.train import ExecSpec, prepare_process


class UnknownMethodError(FastForgetError):
    pass


@dataclass
class UnlearnContext:
    """What a method may use: the original model, its data, the forget classes, the config and the device."""

    original: nn.Module
    meta: dict
    dataset: ImageDataset
    forget: list[int]
    cfg: Config
    device: torch.device
    seed: int = 0
    forget_samples: torch.Tensor | None = None  # training positions to forget, instead of whole classes
    splits: ForgetSplits = field(init=False)

    def __post_init__(self) -> None:
        if self.forget_samples is None:
            self.splits = ForgetSplits.from_labels(self.dataset.train_labels, self.dataset.test_labels, self.forget)
        else:
            self.forget_samples = sample_positions(self.forget_samples, len(self.dataset.train_labels))
            self.splits = ForgetSplits.from_samples(self.forget_samples, len(self.dataset.train_labels),
                                                    len(self.dataset.test_labels))
        self.original = self.original.to(self.device).eval()
        # one copy of the uint8 training images on the device, shared by every loader the method builds (streamed
        # images stay on disk)
        images = self.dataset.train_images
        self.train_images = images if self.dataset.streamed else images.to(self.device)
        self.train_labels = self.dataset.train_labels.to(self.device)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def copy_original(self) -> nn.Module:
        """A trainable copy of the original on the device, channels-last."""
        return copy.deepcopy(self.original).to(self.device, memory_format=torch.channels_last)

    @property
    def execution(self) -> ExecSpec:
        """AMP and torch.compile as the config says (`train.amp`, `train.compile`)."""
        return ExecSpec(amp=self.cfg.train.amp, compile=self.cfg.train.compile)

    def loader(self, indices: torch.Tensor, batch_size: int, *, shuffle: bool = True, augment: bool = True,
               drop_last: bool = False) -> Iterable:
        """Batches of training samples at `indices` from the config's loader (`data.loader`), with the config's
        augmentation (or none)."""
        return make_train_loader(self.dataset, self.cfg, indices=indices, batch_size=batch_size, device=self.device,
                                 seed=self.seed, shuffle=shuffle, augment=augment, drop_last=drop_last,
                                 images=self.train_images, labels=self.train_labels)


MethodFn = Callable[[UnlearnContext, dict], nn.Module]


@dataclass
class Method:
    name: str
    fn: MethodFn
    summary: str
    defaults: dict[str, Any]
    data: str  # which data the method touches: "forget", "retain", "both", "none"
    samples: bool = False  # forgets any set of training samples, not only whole classes


def sample_positions(forget_samples: Any, size: int) -> torch.Tensor:
    """Training positions to forget, from indices or a boolean mask over the training split: sorted, unique."""
    given = torch.as_tensor(forget_samples)
    if given.dtype == torch.bool:
        if given.shape != (size,):
            raise ConfigError(f"a forget mask needs one entry per training sample ({size}), not {tuple(given.shape)}")
        given = torch.nonzero(given).flatten()
    if given.is_floating_point() or given.dim() != 1:
        raise ConfigError("forget_indices must be training-sample indices (integers) or a boolean mask")
    positions = torch.unique(given.long().cpu())
    if len(positions) == 0 or len(positions) >= size:
        raise ConfigError(f"forget_indices names {len(positions)} of the {size} training samples: name some, not all")
    if positions[0] < 0 or positions[-1] >= size:
        raise ConfigError(f"forget_indices has indices outside the training split 0..{size - 1}")
    return positions


METHODS: dict[str, Method] = {}


def register(name: str, *, summary: str, data: str, defaults: Mapping[str, Any],
             samples: bool = False) -> Callable[[MethodFn], MethodFn]:
    """`samples`: the method only uses the forget and retain splits, so it can forget any set of samples."""
    def decorate(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name=name, fn=fn, summary=summary, defaults=dict(defaults), data=data,
                               samples=samples)
        return fn
    return decorate


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; `fastforget unlearn --list` shows them: "
                                 f"{', '.join(sorted(METHODS))}")
    return METHODS[name]


# The range of every hyperparameter that methods share by name; its type comes from the method's default (or
# `kind` where the default is None). A value outside is refused before any work.
HYPERPARAMETER_RULES: dict[str, Rule] = {
    "epochs": Rule(min=1, kind=int),
    "lr": Rule(above=0),
    "momentum": Rule(min=0, below=1),
    "weight_decay": Rule(min=0),
    "batch_size": Rule(min=1),
    "schedule": Rule(choices=SCHEDULES),
    "reassign": Rule(choices=("proportional", "max-class")),
    "retain_fraction": Rule(min=0, below=1),
    "alpha": Rule(min=0),
    "lambda": Rule(min=0),
    "bound": Rule(above=0),
    "ratio": Rule(above=0, max=1),
    "d_samples": Rule(min=0),
    "alpha_r": Rule(above=0),
    "alpha_f": Rule(above=0),
    "samples_per_class": Rule(min=1),
    "forget_samples": Rule(min=1),
    "adapter_after": Rule(kind=str),
    "blocks": Rule(kind=list),
}
MODULE_KEYS = ("adapter_after", "blocks")  # hyperparameters that name blocks of the model: checked against it


def merge_hyperparameters(method: Method, *overrides: Mapping[str, Any], origin: str = "") -> dict[str, Any]:
    """Defaults <- each override in turn; unknown keys and values of the wrong type or range are an error."""
    hp = dict(method.defaults)
    for override in overrides:
        for key, value in override.items():
            if key not in hp:
                raise ConfigError(f"method {method.name!r} has no hyperparameter {key!r}"
                                  f"{did_you_mean(key, hp)}; it takes {', '.join(sorted(hp)) or 'none'}")
            hp[key] = check_value(f"{method.name} hyperparameter {key}", value, method.defaults[key],
                                  HYPERPARAMETER_RULES.get(key), origin or f"--hp or [unlearn.{method.name}]")
    return hp


def check_method_tables(tables: Mapping[str, Any], origin: str, overridden: Mapping[str, str] | None = None) -> None:
    """A config's `[unlearn.METHOD]` tables: real methods, real hyperparameters, values in range."""
    for name, table in tables.items():
        texts = [text for key, text in (overridden or {}).items() if key.startswith(f"unlearn.{name}.")]
        where = f"the command line: {texts[0]}" if texts else origin
        if name not in METHODS:
            raise ConfigError(f"[unlearn.{name}] (from {where}) names no method{did_you_mean(name, METHODS)}; "
                              f"methods: {', '.join(sorted(METHODS))}")
        if not isinstance(table, dict):
            raise ConfigError(f"unlearn.{name} (from {where}) must be a table of hyperparameters, like "
                              f"unlearn.{name}.epochs=5")
        merge_hyperparameters(METHODS[name], table, origin=where if texts else f"[unlearn.{name}] of {origin}")


def _check_module_names(model: nn.Module, method: str, hp: Mapping[str, Any]) -> None:
    names = {name for name, _ in model.named_modules() if name}
    for key in MODULE_KEYS:
        value = hp.get(key)
        for block in [value] if isinstance(value, str) else value or []:
            if block not in names:
                children = ", ".join(name for name, _ in model.named_children())
                raise ConfigValueError(f"{method} hyperparameter {key}: the model has no block {block!r}"
                                  f"{did_you_mean(str(block), names)}; its blocks: {children}")


@dataclass
class UnlearnResult:
    """The unlearned model and how it was made; `api.unlearn` adds `meta`, its sidecar (accuracies included)."""

    model: nn.Module
    method: str
    hyperparameters: dict[str, Any]
    wall_seconds: float
    peak_memory_bytes: int
    memory_kind: str
    meta: dict[str, Any] = field(default_factory=dict)


def run_method(name: str, ctx: UnlearnContext, overrides: Mapping[str, Any] | None = None) -> UnlearnResult:
    """Run one method with timing and memory measurement; the config's `[unlearn.NAME]` table applies first.

    One-time process costs (the optimiser's first import of torch._dynamo) are paid before the timer starts.
    """
    method = get_method(name)
    if ctx.forget_samples is not None and not method.samples:
        able = ", ".join(sorted(m for m, spec in METHODS.items() if spec.samples))
        raise ConfigError(f"{name} forgets whole classes (it works on the forget classes' outputs), not a set of "
                          f"samples; sample-level forgetting works with {able}")
    hp = merge_hyperparameters(method, ctx.cfg.method_overrides(name), overrides or {})
    _check_module_names(ctx.original, name, hp)
    prepare_process()
    seed_everything(ctx.seed)
    with measure(ctx.device) as m:
        model = method.fn(ctx, hp)
    return UnlearnResult(model=model.eval(), method=name, hyperparameters=hp, wall_seconds=m.wall_seconds,
                         peak_memory_bytes=m.peak_memory_bytes, memory_kind=m.memory_kind)
