"""Models as named stages followed by a head, so that any slice of the forward pass can be run on its own."""

from __future__ import annotations

import torch
from torch import nn


class StagedModel(nn.Module):
    """A classifier written as `stages` (child names, in order) then a head (global pool, flatten, classifier).

    `run(x, start, stop)` applies the stages `start:stop` (and the head when `stop` is None), so `model(x) ==
    model.run(model.run(x, 0, k), k)`: RWFT-2-O computes its frozen prefix once per batch and feeds the output to
    both the teacher and the student.
    """

    stages: tuple[str, ...] = ()
    classifier = "fc"

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.classifier)(torch.flatten(self.pool(x), 1))

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for name in self.stages[start:stop]:
            x = getattr(self, name)(x)
        return self.head(x) if stop is None else x

    def stage_modules(self) -> list[nn.Module]:
        """The modules whose parameters each stage uses, in order."""
        return [getattr(self, name) for name in self.stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)
