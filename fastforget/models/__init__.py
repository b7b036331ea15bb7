"""Model zoo: plain `nn.Module`s with named blocks (`model.middle_block`, `model.classifier`) for the methods, and
torchvision / timm architectures by name (`torchvision:resnet18`); `contract` says what methods need of a model."""

from __future__ import annotations

import inspect

from torch import nn

from fastforget.models.cnn import SmallCNN
from fastforget.models.external import ARGS as EXTERNAL_ARGS
from fastforget.models.external import LIBRARIES, build_external
from fastforget.models.resnet import ResNet18
from fastforget.models.staged import StagedModel
from fastforget.models.vgg import VGG19BN
from fastforget.models.wrappers import IdentityAdapters, LogitMask, apply_wrappers, wrapper_specs

ARCHITECTURES: dict[str, type[nn.Module]] = {"resnet18": ResNet18, "vgg19_bn": VGG19BN, "cnn": SmallCNN}


def architecture_names() -> list[str]:
    """What `model.arch` accepts: fastforget's architectures, and `LIBRARY:NAME` for any torchvision / timm model."""
    return [*ARCHITECTURES, *(f"{library}:NAME" for library in LIBRARIES)]


def is_external(arch: str) -> bool:
    return arch.partition(":")[0] in LIBRARIES and bool(arch.partition(":")[2])


def arch_parameters(arch: str) -> list[str]:
    """The keyword arguments an architecture takes besides `num_classes` (`width` for fastforget's own)."""
    if is_external(arch):
        return ["in_channels", *EXTERNAL_ARGS]
    return [p for p in inspect.signature(ARCHITECTURES[arch]).parameters if p != "num_classes"]


def build_model(arch: str, num_classes: int, in_channels: int = 3, **arch_args: int) -> nn.Module:
    """Build an architecture by name; `arch_args` are its keyword arguments (e.g. `width`, `cifar_stem`)."""
    if is_external(arch):
        return build_external(arch, num_classes, in_channels, **arch_args)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(architecture_names())}")
    return ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels, **arch_args)


def base_model(model: nn.Module) -> nn.Module:
    """The innermost model under any wrappers."""
    while hasattr(model, "base") and hasattr(model, "spec"):
        model = model.base
    return model


__all__ = [
    "ARCHITECTURES", "IdentityAdapters", "LogitMask", "StagedModel", "apply_wrappers", "arch_parameters",
    "architecture_names", "base_model", "build_model", "is_external",
    "wrapper_specs",
]
