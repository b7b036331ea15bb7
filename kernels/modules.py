"""nn.Module wrappers, so the losses drop into training code that expects `criterion(output, target)`."""

from __future__ import annotations

import torch
from torch import nn

from .dispatch import reweighted_cross_entropy_with_mask, tv_distance
from .validation import (
    REASSIGN_MODES,
    REDUCTIONS,
    Forget,
    check_choice,
    check_float_tensor,
    check_same_rows,
    forget_mask,
)


class ReweightedCrossEntropyLoss(nn.Module):
    """`kernels.reweighted_cross_entropy` with the forget set fixed at construction.

    The bool mask is built and checked once per (K, device) and cached, so a training step pays no
    host-device sync for it.
    """

    def __init__(self, forget: Forget, reassign: str = "proportional", reduction: str = "mean") -> None:
        super().__init__()
        check_choice("reassign", reassign, REASSIGN_MODES)
        check_choice("reduction", reduction, REDUCTIONS)
        self.forget = forget
        self.reassign = reassign
        self.reduction = reduction
        self._masks: dict[tuple[int, torch.device], torch.Tensor] = {}

    def forget_mask(self, num_classes: int, device: torch.device) -> torch.Tensor:
        key = (num_classes, device)
        if key not in self._masks:
            self._masks[key] = forget_mask(self.forget, num_classes, device)
        return self._masks[key]

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_float_tensor("student_logits", student_logits)
        check_float_tensor("teacher_logits", teacher_logits)
        check_same_rows(student_logits, teacher_logits, "teacher_logits")
        mask = self.forget_mask(student_logits.shape[1], student_logits.device)
        return reweighted_cross_entropy_with_mask(student_logits, teacher_logits, mask, self.reassign,
                                                  self.reduction)

    def extra_repr(self) -> str:
        return f"forget={self.forget!r}, reassign={self.reassign!r}, reduction={self.reduction!r}"


class TVDistance(nn.Module):
    """`kernels.tv_distance` as a module: per-row total variation between two batches of outputs."""

    def __init__(self, from_logits: bool = True) -> None:
        super().__init__()
        self.from_logits = from_logits

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return tv_distance(a, b, self.from_logits)

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}"
