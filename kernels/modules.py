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
    teacher_as_logits,
)


class ReweightedCrossEntropyLoss(nn.Module):
    """`reweighted_cross_entropy` with the forget set fixed at construction: `criterion(student_logits, teacher)`.

    The teacher is logits; `teacher_is_probs=True` takes probabilities. Left unsaid (None), the first batch is
    checked once and a warning is raised if its rows look like probabilities. The bool mask is built and checked
    once per (K, device) and cached, so a training step pays no host-device sync for either.
    """

    def __init__(self, forget: Forget, reassign: str = "proportional", reduction: str = "mean", *,
                 teacher_is_probs: bool | None = None) -> None:
        super().__init__()
        check_choice("reassign", reassign, REASSIGN_MODES)
        check_choice("reduction", reduction, REDUCTIONS)
        self.forget = forget
        self.reassign = reassign
        self.reduction = reduction
        self.teacher_is_probs = teacher_is_probs
        self._checked = False  # whether a batch was checked for looking like probabilities
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
        said = self.teacher_is_probs if self.teacher_is_probs is not None or not self._checked else False
        teacher_logits = teacher_as_logits(teacher_logits, said, "ReweightedCrossEntropyLoss")
        self._checked = True
        return reweighted_cross_entropy_with_mask(student_logits, teacher_logits, mask, self.reassign,
                                                  self.reduction)

    def extra_repr(self) -> str:
        return (f"forget={self.forget!r}, reassign={self.reassign!r}, reduction={self.reduction!r}, "
                f"teacher_is_probs={self.teacher_is_probs}")


class TVDistance(nn.Module):
    """`kernels.tv_distance` as a module: per-row total variation between two batches of outputs."""

    def __init__(self, from_logits: bool = True) -> None:
        super().__init__()
        self.from_logits = from_logits

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return tv_distance(a, b, self.from_logits)

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}"
