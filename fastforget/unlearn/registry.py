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

from fastforget.config import Config
from fastforget.data import ForgetSplits, ImageDataset, make_train_loader
from fastforget.errors import FastForgetError
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
    splits: ForgetSplits = field(init=False)

    def __post_init__(self) -> None:
        self.splits = ForgetSplits.from_labels(self.dataset.train_labels, self.dataset.test_labels, self.forget)
        self.original = self.original.to(self.device).eval()
        # one copy of the uint8 training images on the device, shared by every loader the method builds
        self.train_images = self.dataset.train_images.to(self.device)
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


METHODS: dict[str, Method] = {}


def register(name: str, *, summary: str, data: str, defaults: Mapping[str, Any]) -> Callable[[MethodFn], MethodFn]:
    def decorate(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name=name, fn=fn, summary=summary, defaults=dict(defaults), data=data)
        return fn
    return decorate


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; `fastforget unlearn --list` shows them: "
                                 f"{', '.join(sorted(METHODS))}")
    return METHODS[name]


def merge_hyperparameters(method: Method, *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults <- each override in turn; unknown keys are an error that lists the known ones."""
    hp = dict(method.defaults)
    for override in overrides:
        unknown = set(override) - set(hp)
        if unknown:
            raise FastForgetError(f"method {method.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                                  f"it takes {sorted(hp)}")
        hp.update(override)
    return hp


@dataclass
class UnlearnResult:
    model: nn.Module
    method: str
    hyperparameters: dict[str, Any]
    wall_seconds: float
    peak_memory_bytes: int
    memory_kind: str


def run_method(name: str, ctx: UnlearnContext, overrides: Mapping[str, Any] | None = None) -> UnlearnResult:
    """Run one method with timing and memory measurement; the config's `[unlearn.NAME]` table applies first.

    One-time process costs (the optimiser's first import of torch._dynamo) are paid before the timer starts.
    """
    method = get_method(name)
    hp = merge_hyperparameters(method, ctx.cfg.method_overrides(name), overrides or {})
    prepare_process()
    seed_everything(ctx.seed)
    with measure(ctx.device) as m:
        model = method.fn(ctx, hp)
    return UnlearnResult(model=model.eval(), method=name, hyperparameters=hp, wall_seconds=m.wall_seconds,
                         peak_memory_bytes=m.peak_memory_bytes, memory_kind=m.memory_kind)
