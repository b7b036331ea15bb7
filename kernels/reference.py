"""Pure-PyTorch references: the CPU path, the fallback where Triton or a GPU is absent, and the kernels' oracle.

They take an already checked bool forget mask (see `validation.forget_mask`). Math runs in float32, or in
float64 when an input is float64; autograd supplies the gradient, cast back to the input dtype.
"""

from __future__ import annotations

import torch

from .validation import REASSIGN_MODES, Forget, check_choice, check_float_tensor, check_rows, forget_mask


def math_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (their sums lose too much), float64 kept for the oracle."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def target_from_mask(teacher_logits: torch.Tensor, mask: torch.Tensor, reassign: str) -> torch.Tensor:
    """q*: the teacher's distribution with the forget classes' mass handed to the retained classes.

    Proportional is a softmax with the forget columns at -inf, never p / (1 - p_f): on the confident forget
    samples that matter 1 - p_f rounds to 0.
    """
    teacher = teacher_logits.detach().to(math_dtype(teacher_logits))
    if reassign == "proportional":
        return teacher.masked_fill(mask, float("-inf")).softmax(dim=-1)
    probs = teacher.softmax(dim=-1)
    forgotten_mass = probs.masked_fill(~mask, 0.0).sum(dim=-1, keepdim=True)
    top_retained = teacher.masked_fill(mask, float("-inf")).argmax(dim=-1, keepdim=True)
    return probs.masked_fill(mask, 0.0).scatter_add(-1, top_retained, forgotten_mass)


def reduce_rows(loss_rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss_rows.mean()
    if reduction == "sum":
        return loss_rows.sum()
    return loss_rows


def take_gradient(ctx, what: str) -> torch.Tensor:
    """The gradient buffer a fused forward left in `ctx.grad`, handed to autograd once: a second backward
    (retain_graph=True) raises instead of returning a gradient that aliases the first."""
    grad, ctx.grad = ctx.grad, None
    if grad is None:
        raise RuntimeError(f"the {what} hands its gradient buffer to autograd, so it supports one backward per "
                           "forward; recompute the loss instead of retain_graph=True, or use backend='reference'")
    return grad


def soft_target_cross_entropy_reference(student_logits: torch.Tensor, target_probs: torch.Tensor,
                                        reduction: str = "mean") -> torch.Tensor:
    """-sum_y q(y) log softmax(student)(y) per row; the target gets no gradient."""
    dtype = math_dtype(student_logits, target_probs)
    log_probs = student_logits.to(dtype).log_softmax(dim=-1)
    loss_rows = -(target_probs.detach().to(dtype) * log_probs).sum(dim=-1)
    return reduce_rows(loss_rows, reduction)


def reweighted_cross_entropy_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                                       mask: torch.Tensor, reassign: str = "proportional",
                                       reduction: str = "mean") -> torch.Tensor:
    target = target_from_mask(teacher_logits, mask, reassign)
    return soft_target_cross_entropy_reference(student_logits, target, reduction)


def tv_distance_reference(a: torch.Tensor, b: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """0.5 * sum |p_a - p_b| over the last dimension, with PyTorch broadcasting of the leading dimensions."""
    dtype = math_dtype(a, b)
    a, b = a.to(dtype), b.to(dtype)
    if from_logits:
        a, b = a.softmax(dim=-1), b.softmax(dim=-1)
    return 0.5 * (a - b).abs().sum(dim=-1)


def reweighted_target(teacher_logits: torch.Tensor, forget: Forget,
                      reassign: str = "proportional") -> torch.Tensor:
    """The RWFT target q* for each row of teacher logits [B, K], to precompute targets or mix them with others.

    float32 (float64 for float64 logits); no gradient flows to the teacher.
    """
    check_float_tensor("teacher_logits", teacher_logits)
    check_rows("teacher_logits", teacher_logits)
    check_choice("reassign", reassign, REASSIGN_MODES)
    mask = forget_mask(forget, teacher_logits.shape[-1], teacher_logits.device)
    return target_from_mask(teacher_logits, mask, reassign)
