"""Input checks shared by every path, so that the Triton kernels and the references reject the same inputs.

Each error names the problem and the fix: these functions sit at the boundary where users' tensors come in.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import torch

Forget = int | Sequence[int] | Sequence[bool] | torch.Tensor

REASSIGN_MODES = ("proportional", "max-class")
REDUCTIONS = ("none", "mean", "sum")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def check_float_tensor(name: str, x: object) -> torch.Tensor:
    """A floating-point tensor; integer logits are almost always labels passed by mistake."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point (float32, bfloat16, float16 or float64), got {x.dtype}; "
                        f"convert it with .float() (integer class labels belong in `forget`, not here)")
    return x


def check_rows(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be [B, K] (rows of class scores), got shape {tuple(x.shape)}; "
                         f"flatten leading dimensions with .reshape(-1, {x.shape[-1] if x.dim() else 'K'})")


def check_same_rows(student: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    """Student and teacher/target must describe the same samples and classes on the same device."""
    check_rows("student_logits", student)
    check_rows(other_name, other)
    if student.shape != other.shape:
        raise ValueError(f"student_logits {tuple(student.shape)} and {other_name} {tuple(other.shape)} must have "
                         f"the same shape [B, K]: one row per sample, one column per class")
    if student.device != other.device:
        raise ValueError(f"student_logits is on {student.device} but {other_name} is on {other.device}; "
                         f"move both to one device with .to(device)")


def forget_mask(forget: Forget, num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The forget set as a bool mask of length K, from an index, a list or tensor of indices, or a bool mask.

    Checks that every index is a class of the model and that at least one class remains to receive the mass.
    """
    if isinstance(forget, bool):
        raise TypeError("forget=True/False is ambiguous: pass class indices (forget=3 or [3, 5]) "
                        "or a boolean mask of length K")
    if isinstance(forget, torch.Tensor):
        values = forget.detach()
    elif isinstance(forget, numbers.Integral):
        values = torch.tensor([int(forget)])
    elif isinstance(forget, (str, bytes)):
        raise TypeError(f"forget must be class indices or a boolean mask, not the string {forget!r}; "
                        "map class names to indices first")
    else:
        try:
            values = torch.as_tensor(forget)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"forget must be an int, a sequence of ints, or a boolean mask of length K; "
                            f"could not read {type(forget).__name__}: {error}") from error
        if values.numel() == 0:
            values = values.long()

    if values.dtype == torch.bool:
        if values.shape != (num_classes,):
            raise ValueError(f"a boolean forget mask must have shape ({num_classes},), one entry per class, "
                             f"got {tuple(values.shape)}")
        mask = values
    elif values.is_floating_point() or values.is_complex():
        raise TypeError(f"forget must hold integer class indices or be a bool mask, got dtype {values.dtype}; "
                        "convert indices with .long()")
    else:
        indices = values.reshape(-1).long()
        if indices.numel():
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ValueError(f"forget class index {bad} is out of range for K={num_classes} classes; "
                                 f"use indices in [0, {num_classes - 1}]")
        mask = torch.zeros(num_classes, dtype=torch.bool, device=indices.device)
        mask[indices] = True

    if num_classes and bool(mask.all()):
        raise ValueError(f"the forget set covers all {num_classes} classes, so no class is left to receive the "
                         "forgotten probability mass; forget fewer classes")
    mask = mask.contiguous()  # a column of a [K, n] mask has stride n; the kernels read it with stride 1
    return mask.to(device) if device is not None else mask


def teacher_as_logits(teacher: torch.Tensor, teacher_is_probs: bool | None, where: str) -> torch.Tensor:
    """The teacher as logits: probabilities (`teacher_is_probs=True`) become their logs, which softmax maps back
    to the same distribution. Left unsaid (None), logits are assumed and rows that look like probabilities (all in
    [0, 1], each summing to 1) draw a warning: read as logits they give a silently wrong loss. The check costs one
    host sync; saying `teacher_is_probs=False` skips it."""
    if teacher_is_probs:
        return teacher.float().clamp_min(torch.finfo(torch.float32).tiny).log().to(
            torch.float64 if teacher.dtype == torch.float64 else torch.float32)
    if teacher_is_probs is None and teacher.numel() and looks_like_probabilities(teacher):
        warnings.warn(f"{where}: the teacher's rows look like probabilities (in [0, 1], each summing to 1) but are "
                      "read as logits, which gives a wrong loss; pass teacher_is_probs=True for probabilities, or "
                      "teacher_is_probs=False to say they are logits", UserWarning, stacklevel=3)
    return teacher


def looks_like_probabilities(rows: torch.Tensor) -> bool:
    rows = rows.detach().double()
    return bool(((rows >= 0) & (rows <= 1)).all() and torch.allclose(rows.sum(-1), torch.ones(()).double(),
                                                                        atol=1e-3, rtol=0))
