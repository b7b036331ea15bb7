"""Architectures from torchvision and timm by name: `torchvision:resnet18`, `timm:resnet18` (timm is the optional
extra `fastforget[timm]`). Always randomly initialised: fastforget trains its models itself, and loads the weights
of a model trained elsewhere from a file (`fastforget eval --checkpoint my.pt --arch ...`), never from a hub.

`in_channels` other than 3 replaces torchvision's first convolution (timm takes `in_chans` itself);
`cifar_stem=1` gives a ResNet the CIFAR stem of fastforget's own ResNet-18 (3x3 stride-1 first convolution, no
max-pool), so that 32-pixel images keep their resolution.
"""

from __future__ import annotations

from torch import nn

LIBRARIES = ("torchvision", "timm")
ARGS = ("cifar_stem",)


def build_external(arch: str, num_classes: int, in_channels: int = 3, cifar_stem: int = 0) -> nn.Module:
    library, _, name = arch.partition(":")
    if library == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError:
            raise ValueError(f"torchvision has no model {name!r}; choose one of "
                             f"torchvision.models.list_models(), e.g. resnet18, vgg11_bn") from None
        if in_channels != 3:
            _replace_conv(model, _first_conv(model), in_channels=in_channels)
    elif library == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError(f"{arch} needs timm: pip install 'fastforget[timm]'") from None
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r}; see timm.list_models(), e.g. resnet18")
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    else:
        raise ValueError(f"unknown model library {library!r} in {arch!r}; use one of "
                         f"{', '.join(f'{lib}:NAME' for lib in LIBRARIES)}")
    if cifar_stem:
        if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
            raise ValueError(f"cifar_stem applies to ResNets (a conv1 and a maxpool); {arch} has neither")
        _replace_conv(model, "conv1", kernel_size=3, stride=1, padding=1)
        model.maxpool = nn.Identity()
    return model


def _first_conv(model: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def _replace_conv(model: nn.Module, name: str, **changes: int) -> None:
    """Put a fresh convolution in place of the named one, with some of its settings changed."""
    old: nn.Conv2d = model.get_submodule(name)
    settings = dict(in_channels=old.in_channels, out_channels=old.out_channels, kernel_size=old.kernel_size,
                    stride=old.stride, padding=old.padding, bias=old.bias is not None)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Conv2d(**{**settings, **changes}))
