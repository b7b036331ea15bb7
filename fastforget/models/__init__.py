"""Model zoo: plain `nn.Module`s with named blocks (`model.middle_block`, `model.classifier`) for the methods."""

from __future__ import annotations

from torch import nn

from fastforget.models.cnn import SmallCNN
from fastforget.models.resnet import ResNet18
from fastforget.models.staged import StagedModel
from fastforget.models.vgg import VGG19BN
from fastforget.models.wrappers import IdentityAdapters, LogitMask, apply_wrappers, wrapper_specs

ARCHITECTURES: dict[str, type[nn.Module]] = {"resnet18": ResNet18, "vgg19_bn": VGG19BN, "cnn": SmallCNN}


def build_model(arch: str, num_classes: int, in_channels: int = 3, **arch_args: int) -> nn.Module:
    """Build an architecture by name; `arch_args` are its keyword arguments (e.g. `width`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels, **arch_args)


def base_model(model: nn.Module) -> nn.Module:
    """The innermost model under any wrappers."""
    while hasattr(model, "base") and hasattr(model, "spec"):
        model = model.base
    return model


__all__ = [
    "ARCHITECTURES", "IdentityAdapters", "LogitMask", "StagedModel", "apply_wrappers", "base_model", "build_model",
    "wrapper_specs",
]
