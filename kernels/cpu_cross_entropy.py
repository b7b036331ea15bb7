"""The reweighted cross-entropy on the CPU in closed form: an autograd.Function whose forward computes the loss
and the gradient (softmax(s) - q*) * scale together, over blocks of rows small enough to stay in cache.

Autograd through the reference keeps four [B, K] buffers alive (log-softmax, target, their product, the
gradient) and runs every op over the whole batch, out of cache. Here the only [B, K] buffer is the gradient,
written in the forward; backward returns it for grad_output == 1 (the autograd seed) and multiplies it once
otherwise. Math in float32; a half-precision gradient is kept in float32 and rounded once, in the backward.

Two forms of the same math, chosen per shape (bench/KERNELS.md measures them side by side): eager ATen ops over
blocks of rows, and the whole batch as one torch.compile'd function (Inductor fuses each row's reductions and
exponentials into one loop), which is faster at every shape measured but costs seconds of compiling per K and
dtype, so the dispatch takes it only for large batches (B * K >= COMPILE_MIN_ELEMENTS) and falls back to eager
where compiling fails. Inside a caller's torch.compile'd region (a training step compiled whole) neither form
runs: the Function's math is traced into the caller's graph, for Inductor to fuse with the model around it. One
exponential per element of each input (the two softmaxes). The loss per row is
sum_y q(y) (max s - s_y) + sum q * log sum exp(s - max s), two non-negative terms, so a well-fitted row loses
nothing to cancellation (as in the Triton kernel).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from .reference import reduce_rows, take_gradient

BLOCK_BYTES = 1 << 20          # one block of float32 logits: 1 MiB (L2 here; 256 KiB blocks measured slower)
COMPILE_MIN_ELEMENTS = 1 << 16  # B * K from which the compiled form runs (its compile pays off over a run)
COMPILE_FAILED = False          # set when torch.compile failed once: eager from then on


def block_rows(n_cols: int) -> int:
    return max(1, BLOCK_BYTES // (4 * n_cols))


def softmax_rows(x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """softmax(x) over each row (written into `out` when given), with max x and log sum exp(x - max x)."""
    x_max = x.amax(dim=1, keepdim=True)
    e = torch.sub(x, x_max, out=out).exp_()
    z = e.sum(dim=1, keepdim=True)
    return e.div_(z), x_max, z.log_()


class ForgetColumns(NamedTuple):
    """The forget mask as float rows of factors (broadcast adds and multiplies are several times faster than
    masked_fill on the CPU)."""

    minus_inf: torch.Tensor  # -inf on forget classes, 0 elsewhere
    forget: torch.Tensor     # 1 on forget classes, 0 elsewhere
    keep: torch.Tensor       # 0 on forget classes, 1 elsewhere

    @classmethod
    def of(cls, mask: torch.Tensor) -> ForgetColumns:
        forget = mask.float()[None, :]
        return cls(torch.zeros_like(forget).masked_fill_(mask[None, :], float("-inf")), forget, 1 - forget)


def block_target(other: torch.Tensor, columns: ForgetColumns | None, reassign: str | None) -> torch.Tensor:
    """q* for a block of teacher logits (or the given target probabilities when `reassign` is None)."""
    other = other.float()
    if reassign is None:
        return other
    if reassign == "proportional":
        return softmax_rows(other + columns.minus_inf)[0]
    probs = softmax_rows(other)[0]
    forgotten = (probs * columns.forget).sum(dim=1, keepdim=True)
    top = (other + columns.minus_inf).argmax(dim=1, keepdim=True)
    return probs.mul_(columns.keep).scatter_add_(1, top, forgotten)


def block_loss_and_grad(s: torch.Tensor, other: torch.Tensor, columns: ForgetColumns | None, reassign: str | None,
                        grad_scale: float, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses of a block of rows and the scaled float32 gradient (written into `out` when given)."""
    s = s.float()
    q = block_target(other, columns, reassign)
    q_sum = q.sum(dim=1, keepdim=True) if reassign is None else None  # q* sums to 1
    p, s_max, log_z = softmax_rows(s, out)
    # -log p(y) = (max s - s_y) + log sum exp(s - max s): two non-negative terms
    loss = torch.linalg.vecdot(q, s_max - s) + (log_z if q_sum is None else log_z * q_sum).squeeze(1)
    if q_sum is not None:  # a target that need not sum to 1: d/ds = p * sum q - q
        p.mul_(q_sum)
    return loss, p.sub_(q).mul_(grad_scale)


@functools.cache
def compiled_block() -> Callable:
    """`block_loss_and_grad` under torch.compile: static at first, dynamic in B from the second batch size on
    (torch's automatic dynamic shapes), K kept static (a symbolic K of 10 vectorizes badly: 1.2x instead of 2x)."""
    return torch.compile(block_loss_and_grad)


def use_compiled(form: str, n_rows: int, n_cols: int) -> bool:
    """`form`: "compiled", "eager", or "auto" (compiled from COMPILE_MIN_ELEMENTS elements on)."""
    wanted = form == "compiled" or (form == "auto" and n_rows * n_cols >= COMPILE_MIN_ELEMENTS)
    return wanted and not COMPILE_FAILED


def loss_and_grad(student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, reassign: str | None,
                  grad_scale: float, write_grad: bool, form: str = "auto") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row float32 losses and, when asked for, the float32 gradient (softmax(s) * sum q - q) * grad_scale."""
    global COMPILE_FAILED
    n_rows, n_cols = student.shape
    columns = ForgetColumns.of(mask) if mask is not None else None
    if use_compiled(form, n_rows, n_cols):
        try:
            loss, grad = compiled_block()(student, other, columns, reassign, grad_scale)
            return loss, grad if write_grad else None
        except Exception as error:  # noqa: BLE001 (no C++ compiler, an unsupported build: eager is always there)
            COMPILE_FAILED = True
            warnings.warn(f"kernels: torch.compile of the closed-form cross-entropy failed ({error!r:.200}); "
                          "using the eager form", stacklevel=4)
    loss = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    grad = torch.empty(n_rows, n_cols, dtype=torch.float32, device=student.device) if write_grad else None
    step = block_rows(n_cols)
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        loss[rows] = block_loss_and_grad(student[rows], other[rows], columns, reassign, grad_scale,
                                         None if grad is None else grad[rows])[0]
    return loss, grad


class ClosedFormCrossEntropyFunction(torch.autograd.Function):
    """CPU forward writes the loss and the scaled gradient; backward is free for grad_output == 1.

    Inside a torch.compile'd region (the caller's training step traced by TorchDynamo) the same math is traced
    into the caller's graph instead: the whole batch as one expression, which Inductor fuses with what surrounds
    it, the gradient kept as a saved tensor and multiplied by grad_output in the traced backward (one fused
    multiply; TorchDynamo cannot trace the eager form's row blocks, its nested compile or its data-dependent
    check of grad_output)."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, reassign: str | None,
                reduction: str, form: str = "auto") -> torch.Tensor:
        grad_scale = 1.0 / student.shape[0] if reduction == "mean" else 1.0
        ctx.dtype, ctx.traced = student.dtype, torch.compiler.is_compiling()
        with torch.autocast(student.device.type, enabled=False):  # float32 math also inside an autocast region
            if ctx.traced:
                columns = ForgetColumns.of(mask) if mask is not None else None
                loss, grad = block_loss_and_grad(student.detach(), other.detach(), columns, reassign, grad_scale)
                ctx.save_for_backward(grad)
            else:
                loss, grad = loss_and_grad(student.detach(), other.detach(), mask, reassign, grad_scale,
                                           ctx.needs_input_grad[0], form)
                ctx.grad = grad
        return reduce_rows(loss, reduction)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.traced:
            (grad,) = ctx.saved_tensors
            scale = grad_output.float()[:, None] if grad_output.dim() else grad_output.float()
            return (grad * scale).to(ctx.dtype), None, None, None, None, None
        grad = take_gradient(ctx, "closed-form cross-entropy")
        if not bool((grad_output == 1).all()):
            grad.mul_(grad_output.float()[:, None] if grad_output.dim() else grad_output.float())
        return grad.to(ctx.dtype), None, None, None, None, None
