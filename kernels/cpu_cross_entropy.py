"""The reweighted cross-entropy on the CPU in closed form: an autograd.Function whose forward computes the loss
and the gradient (softmax(s) - q*) * scale together, over blocks of rows small enough to stay in cache.

Autograd through the reference keeps four [B, K] buffers alive (log-softmax, target, their product, the
gradient) and runs every op over the whole batch, out of cache. Here the only [B, K] buffer is the gradient,
written in the forward; backward returns it for grad_output == 1 (the autograd seed) and multiplies it once
otherwise. Math in float32; a half-precision gradient is kept in float32 and rounded once, in the backward.

The loss is -sum_y q*(y) log_softmax(s)(y): every addend >= 0, so a well-fitted row loses nothing to
cancellation (as in the Triton kernel).
"""

from __future__ import annotations

import torch

from kernels.reference import reduce_rows

BLOCK_BYTES = 1 << 18  # one row block of float32 logits: 256 KiB, a share of L2 (1 MiB on this machine)


def block_rows(n_cols: int) -> int:
    return max(1, BLOCK_BYTES // (4 * n_cols))


def block_target(other: torch.Tensor, mask: torch.Tensor | None, reassign: str | None) -> torch.Tensor:
    """q* for a block of teacher logits (or the given target probabilities when `reassign` is None)."""
    other = other.float()
    if reassign is None:
        return other
    if reassign == "proportional":
        return other.masked_fill(mask, float("-inf")).softmax(dim=1)
    probs = other.softmax(dim=1)
    forgotten = probs @ mask.float()
    top = other.masked_fill(mask, float("-inf")).argmax(dim=1, keepdim=True)
    return probs.masked_fill_(mask, 0.0).scatter_add_(1, top, forgotten[:, None])


def loss_and_grad(student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, reassign: str | None,
                  grad_scale: float, write_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row float32 losses and, when asked for, the float32 gradient (softmax(s) * sum q - q) * grad_scale."""
    n_rows, n_cols = student.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    grad = torch.empty(n_rows, n_cols, dtype=torch.float32, device=student.device) if write_grad else None
    step = block_rows(n_cols)
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        log_p = student[rows].float().log_softmax(dim=1)
        q = block_target(other[rows], mask, reassign)
        torch.linalg.vecdot(q, log_p, out=loss[rows]).neg_()
        if grad is not None:
            p = torch.exp(log_p, out=grad[rows])
            if reassign is None:  # a target that need not sum to 1: d/ds = p * sum q - q
                p.mul_(q.sum(dim=1, keepdim=True))
            p.sub_(q).mul_(grad_scale)
    return loss, grad


class ClosedFormCrossEntropyFunction(torch.autograd.Function):
    """CPU forward writes the loss and the scaled gradient; backward is free for grad_output == 1."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, reassign: str | None,
                reduction: str) -> torch.Tensor:
        grad_scale = 1.0 / student.shape[0] if reduction == "mean" else 1.0
        loss, grad = loss_and_grad(student.detach(), other.detach(), mask, reassign, grad_scale,
                                   ctx.needs_input_grad[0])
        ctx.grad, ctx.dtype = grad, student.dtype
        return reduce_rows(loss, reduction)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("the closed-form cross-entropy hands its gradient buffer to autograd, so it supports "
                               "one backward per forward; recompute the loss instead of retain_graph=True, or use "
                               "backend='reference'")
        if not bool((grad_output == 1).all()):
            grad.mul_(grad_output.float()[:, None] if grad_output.dim() else grad_output.float())
        return grad.to(ctx.dtype), None, None, None, None
