"""The model contract: what the unlearning methods need from a model, and how they find it.

Most methods need nothing but `model(images) -> logits` over K classes (and trainable parameters). Four need
parts, which they find by name (hyperparameters) or through the default resolver below:

- the classifier, the final `nn.Linear` with K outputs: `bu-expand` widens it by a shadow class, `rwft-2-o` trains
  it (`blocks=[...]` names other modules instead);
- the middle block: `rwft-2-o` trains it beside the classifier, `rw-a` puts an identity-initialised 1x1 conv after
  it (`block=NAME`; its output must be a [B, C, H, W] feature map). `rw-a`'s other adapter and `rw-mask` act on the
  logits, so they need only K.

The default resolver, first match wins:
1. fastforget's own models: their `classifier` and `middle_block` attributes (ResNet-18 `layer3` + `fc`,
   VGG-19-BN `block4` + `fc`, the small CNN `block2` + `fc`); wrappers resolve to their base's parts.
2. ResNets (torchvision's and timm's: children `layer1`..`layer4`): `layer3`.
3. VGGs (torchvision's and timm's: a `features` nn.Sequential with max-pools): the modules of its second-to-last
   pooling stage (VGG's block 4).
4. timm models: `get_classifier()`; the middle block is the second-to-last entry of `feature_info`.
5. Any other model: the classifier is its last `nn.Linear` with K outputs; there is no default middle block.
What cannot be found raises `ModelContractError`, which lists the model's top-level children to choose from.
"""

from __future__ import annotations

import torch
from torch import nn

from fastforget.errors import ModelContractError


def children_listing(model: nn.Module) -> str:
    """The model's top-level children with their types, as an error message shows them."""
    return ", ".join(f"{name} ({type(child).__name__})" for name, child in model.named_children()) or "none"


def _unwrapped(model: nn.Module) -> tuple[nn.Module, str]:
    """The innermost model under fastforget's wrappers, and the prefix of its names from the outside."""
    prefix = ""
    while hasattr(model, "base") and hasattr(model, "spec"):
        model, prefix = model.base, f"{prefix}base."
    return model, prefix


def classifier_name(model: nn.Module, num_classes: int | None = None) -> str:
    """The dotted name of the model's final classifier layer (an `nn.Linear`); see the module docstring."""
    base, prefix = _unwrapped(model)
    name = _own_name(base, "classifier")
    if name is None and callable(getattr(base, "get_classifier", None)):
        head = base.get_classifier()
        name = next((n for n, module in base.named_modules() if module is head and n), None)
    if name is None:
        linears = [n for n, module in base.named_modules()
                   if isinstance(module, nn.Linear) and num_classes in (None, module.out_features)]
        name = linears[-1] if linears else None
    if name is None or not isinstance(base.get_submodule(name), nn.Linear):
        outputs = f" with {num_classes} outputs" if num_classes is not None else ""
        raise ModelContractError(f"{type(base).__name__} has no nn.Linear classifier{outputs} to find; this method "
                                 f"needs one (top-level children: {children_listing(base)})")
    return prefix + name


def middle_block(model: nn.Module, *, method: str = "this method", key: str = "adapter_after") -> list[str]:
    """The dotted names of the modules that make up the model's middle block (an adapter goes after the last)."""
    base, prefix = _unwrapped(model)
    own = _own_name(base, "middle_block")
    if own is not None:
        names = [own]
    elif all(hasattr(base, f"layer{i}") for i in range(1, 5)):
        names = ["layer3"]
    elif isinstance(getattr(base, "features", None), nn.Sequential) and len(_pool_stages(base.features)) >= 2:
        names = [f"features.{i}" for i in _pool_stages(base.features)[-2]]
    elif len(getattr(base, "feature_info", None) or []) >= 2:
        names = [base.feature_info[-2]["module"]]
    else:
        example = '["layer3", "fc"]' if key == "blocks" else '"layer3"'
        raise ModelContractError(
            f"{method} needs a middle block of {type(base).__name__} and none is known for it: name the module(s) "
            f"with the hyperparameter {key} ({key}={example} in the API, --hp '{key}={example}' on the command "
            f"line; dotted names reach inside children); top-level children: {children_listing(base)}")
    return [prefix + name for name in names]


def _own_name(model: nn.Module, attribute: str) -> str | None:
    """A fastforget model's recorded part name (a string attribute), if it has one."""
    value = getattr(model, attribute, None)
    return value if isinstance(value, str) else None


def _pool_stages(features: nn.Sequential) -> list[list[int]]:
    """The indices of `features` grouped into stages, each ending with a max-pool (a trailing rest is dropped)."""
    stages, current = [], []
    for index, module in enumerate(features):
        current.append(index)
        if isinstance(module, nn.MaxPool2d):
            stages.append(current)
            current = []
    return stages


@torch.no_grad()
def output_channels(model: nn.Module, name: str, image_shape: tuple[int, int, int]) -> int:
    """The channel count of the named module's output, from one forward pass on a blank image; the output must be
    a [B, C, H, W] feature map (a 1x1 conv goes after it)."""
    seen: list[torch.Size] = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    was_training = model.training
    try:
        parameter = next(model.parameters())
        model.eval()(torch.zeros(1, *image_shape, device=parameter.device, dtype=parameter.dtype))
    finally:
        handle.remove()
        model.train(was_training)
    if not seen or len(seen[0]) != 4:
        shape = tuple(seen[0]) if seen else "nothing (it is not used in the forward pass)"
        raise ModelContractError(f"block {name!r} outputs {shape}, not a [B, C, H, W] feature map: name a "
                                 "convolutional block (--hp block=NAME)")
    return seen[0][1]
