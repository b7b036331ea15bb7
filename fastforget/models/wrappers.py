"""Model wrappers that methods add and checkpoints re-apply: the RW-A adapters and the RW-mask output mask.

A wrapper is described by a JSON spec (`{"type": ..., ...}`) stored in the sidecar, so that loading a checkpoint
rebuilds exactly the module tree whose weights were saved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class IdentityAdapters(nn.Module):
    """RW-A: a 1x1 conv after the middle block and a KxK linear after the classifier, both starting as the identity.

    The base model is untouched; the adapters are applied through a forward hook so that the base keeps its
    parameter names and its outputs equal the original's until the adapters are trained.
    """

    def __init__(self, base: nn.Module, block: str, channels: int, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.block = block
        self.mid_adapter = nn.Conv2d(channels, channels, 1)
        self.head_adapter = nn.Linear(num_classes, num_classes)
        with torch.no_grad():
            self.mid_adapter.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.mid_adapter.bias.zero_()
            self.head_adapter.weight.copy_(torch.eye(num_classes))
            self.head_adapter.bias.zero_()
        # A bound method, not a lambda: deepcopy then rebinds the hook to the copied wrapper.
        base.get_submodule(self.block).register_forward_hook(self._adapt_middle)

    def _adapt_middle(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.mid_adapter(output)

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [*self.mid_adapter.parameters(), *self.head_adapter.parameters()]

    @property
    def stages(self) -> tuple[str, ...]:
        return getattr(self.base, "stages", ())

    def stage_modules(self) -> list[nn.Module]:
        """The base's stages, the middle one grouped with the adapter its hook applies."""
        return [nn.ModuleList([module, self.mid_adapter]) if name == self.block else module
                for name, module in zip(self.stages, self.base.stage_modules(), strict=True)]

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The base's `run`, with the head adapter after the head (see `StagedModel.run`)."""
        out = self.base.run(x, start, stop)
        return self.head_adapter(out) if stop is None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_adapter(self.base(x))

    def spec(self) -> dict:
        return {"type": "identity_adapters", "block": self.block, "channels": self.mid_adapter.in_channels,
                "num_classes": self.head_adapter.in_features}


class LogitMask(nn.Module):
    """RW-mask: set the forget logits to -inf, so softmax gives exactly the proportional RWFT target.

    The weights stay untouched, so a white-box attacker still finds the class: this is the instant reference point.
    """

    def __init__(self, base: nn.Module, forget: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.base = base
        mask = torch.zeros(num_classes, dtype=torch.bool)
        mask[list(forget)] = True
        self.register_buffer("forget_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        return logits.masked_fill(self.forget_mask, float("-inf"))

    def spec(self) -> dict:
        return {"type": "logit_mask", "forget": torch.nonzero(self.forget_mask).flatten().tolist()}


def _identity_adapters(model: nn.Module, spec: dict, num_classes: int) -> IdentityAdapters:
    """From a spec; sidecars written before specs recorded the sizes name a fastforget model's middle block."""
    block = spec.get("block") or model.middle_block
    channels = spec.get("channels") or model.block_channels[block]
    return IdentityAdapters(model, block, channels, spec.get("num_classes", num_classes))


WRAPPERS: dict[str, Callable[[nn.Module, dict, int], nn.Module]] = {
    "identity_adapters": _identity_adapters,
    "logit_mask": lambda model, spec, num_classes: LogitMask(model, spec["forget"], num_classes),
}


def apply_wrappers(model: nn.Module, specs: Sequence[dict], num_classes: int) -> nn.Module:
    """Re-apply the wrappers recorded in a sidecar, innermost first, around a model with `num_classes` outputs."""
    for spec in specs:
        if spec.get("type") not in WRAPPERS:
            raise ValueError(f"unknown model wrapper {spec.get('type')!r}; known: {sorted(WRAPPERS)}")
        model = WRAPPERS[spec["type"]](model, spec, num_classes)
    return model


def wrapper_specs(model: nn.Module) -> list[dict]:
    """The specs of the wrappers around a model, innermost first (what `apply_wrappers` takes)."""
    specs: list[dict] = []
    while hasattr(model, "spec") and hasattr(model, "base"):
        specs.insert(0, model.spec())
        model = model.base
    return specs
