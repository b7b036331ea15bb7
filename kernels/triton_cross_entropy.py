"""Fused reweighted cross-entropy: loss and gradient of -sum_y q*(y) log softmax(student)(y) in one kernel.

Each program owns whole rows. A first sweep over K keeps running (online-softmax) statistics of the student and
of the target; a second sweep writes the gradient softmax(student) - q* in the input dtype. Backward then only
scales that buffer by grad_output (and 1/B for the mean), in place, so the only [B, K] tensor besides the inputs
is the gradient.

The cross term is accumulated as sum_y w_y (s_y - max s) with w_y >= 0 and s_y - max s <= 0: every addend has
the same sign, so the loss of a confident, well-fitted row is not lost to cancellation against log-sum-exp.

Importing this module needs Triton; `kernels.dispatch` imports it only when Triton is usable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels import launch
from kernels.reference import reduce_rows

PROPORTIONAL = tl.constexpr(0)
MAX_CLASS = tl.constexpr(1)
SOFT_TARGET = tl.constexpr(2)
MODES = {"proportional": PROPORTIONAL, "max-class": MAX_CLASS}

# A finite "minus infinity" for running maxima: exp(SENTINEL - m) is 0 and SENTINEL - SENTINEL is 0, so the
# first chunk and forget-only chunks need no special case and no inf - inf.
SENTINEL = tl.constexpr(-1.0e30)


@triton.jit
def _reweighted_ce_kernel(
    student_ptr, student_row_stride,
    other_ptr, other_row_stride,  # teacher logits (PROPORTIONAL, MAX_CLASS) or target probabilities (SOFT_TARGET)
    forget_ptr,                   # int8 [K], nonzero = forgotten class; unread for SOFT_TARGET
    loss_ptr,                     # float32 [B]
    grad_ptr, grad_row_stride,    # [B, K] in the student's dtype; written only when WRITE_GRAD
    n_rows, n_cols,
    MODE: tl.constexpr, WRITE_GRAD: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    student_rows = student_ptr + rows[:, None] * student_row_stride
    other_rows = other_ptr + rows[:, None] * other_row_stride
    lanes = tl.arange(0, BLOCK)

    s_max = tl.full([ROWS], SENTINEL, tl.float32)      # student running max
    s_sum = tl.zeros([ROWS], tl.float32)               # sum exp(s - s_max)
    t_max = tl.full([ROWS], SENTINEL, tl.float32)      # teacher running max (retained classes for PROPORTIONAL)
    w_sum = tl.zeros([ROWS], tl.float32)               # sum of the weights w in `cross`
    cross = tl.zeros([ROWS], tl.float32)               # sum w * (s - s_max), <= 0
    forgotten = tl.zeros([ROWS], tl.float32)           # MAX_CLASS: sum exp(t - t_max) over forget classes
    best_t = tl.full([ROWS], SENTINEL, tl.float32)     # MAX_CLASS: top retained teacher logit, its column, and
    best_col = tl.zeros([ROWS], tl.int64)              #   the student logit there
    best_s = tl.zeros([ROWS], tl.float32)

    for start in range(0, n_cols, BLOCK):
        cols = start + lanes
        col_ok = cols < n_cols
        valid = row_ok[:, None] & col_ok[None, :]
        s = tl.load(student_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
        s_or_neg_inf = tl.where(col_ok[None, :], s, float("-inf"))
        new_s_max = tl.maximum(s_max, tl.max(s_or_neg_inf, axis=1))
        s_sum = s_sum * tl.exp(s_max - new_s_max) + tl.sum(tl.exp(s_or_neg_inf - new_s_max[:, None]), axis=1)
        shift = new_s_max - s_max
        s_centred = tl.where(valid, s - new_s_max[:, None], 0.0)
        if MODE == SOFT_TARGET:
            q = tl.load(other_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
            cross = cross - w_sum * shift + tl.sum(q * s_centred, axis=1)
            w_sum = w_sum + tl.sum(q, axis=1)
        else:
            t = tl.load(other_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
            is_forget = tl.load(forget_ptr + cols, mask=col_ok, other=1) != 0
            retained = (col_ok & ~is_forget)[None, :]
            if MODE == PROPORTIONAL:
                t_ref = tl.where(retained, t, float("-inf"))
            else:
                t_ref = tl.where(col_ok[None, :], t, float("-inf"))
            new_t_max = tl.maximum(t_max, tl.max(t_ref, axis=1))
            alpha = tl.exp(t_max - new_t_max)
            e = tl.exp(t_ref - new_t_max[:, None])
            w = tl.where(retained, e, 0.0)
            cross = (cross - w_sum * shift) * alpha + tl.sum(w * s_centred, axis=1)
            w_sum = w_sum * alpha + tl.sum(w, axis=1)
            if MODE == MAX_CLASS:
                forgotten = forgotten * alpha + tl.sum(tl.where(retained, 0.0, e), axis=1)
                t_retained = tl.where(retained, t, float("-inf"))
                chunk_best = tl.max(t_retained, axis=1)
                chunk_col = tl.argmax(t_retained, axis=1)
                chunk_s = tl.sum(tl.where(lanes[None, :] == chunk_col[:, None], s, 0.0), axis=1)
                better = chunk_best > best_t  # strict: ties keep the first column, as torch.argmax does
                best_t = tl.where(better, chunk_best, best_t)
                best_col = tl.where(better, start + chunk_col, best_col)
                best_s = tl.where(better, chunk_s, best_s)
            t_max = new_t_max
        s_max = new_s_max

    log_s_sum = tl.log(s_sum)
    if MODE == SOFT_TARGET:
        loss = w_sum * log_s_sum - cross
    elif MODE == PROPORTIONAL:
        inv_norm = 1.0 / w_sum
        loss = log_s_sum - cross * inv_norm
    else:
        inv_norm = 1.0 / (w_sum + forgotten)
        loss = log_s_sum - (cross + forgotten * (best_s - s_max)) * inv_norm
    tl.store(loss_ptr + rows, loss, mask=row_ok)

    if WRITE_GRAD:
        inv_s_sum = 1.0 / s_sum
        grad_rows = grad_ptr + rows[:, None] * grad_row_stride
        for start in range(0, n_cols, BLOCK):
            cols = start + lanes
            col_ok = cols < n_cols
            valid = row_ok[:, None] & col_ok[None, :]
            s = tl.load(student_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
            s_or_neg_inf = tl.where(col_ok[None, :], s, float("-inf"))
            p = tl.exp(s_or_neg_inf - s_max[:, None]) * inv_s_sum[:, None]
            if MODE == SOFT_TARGET:
                q = tl.load(other_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
                grad = p * w_sum[:, None] - q
            else:
                t = tl.load(other_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
                is_forget = tl.load(forget_ptr + cols, mask=col_ok, other=1) != 0
                retained = (col_ok & ~is_forget)[None, :]
                q = tl.exp(tl.where(retained, t, float("-inf")) - t_max[:, None]) * inv_norm[:, None]
                if MODE == MAX_CLASS:
                    q += tl.where(cols[None, :] == best_col[:, None], (forgotten * inv_norm)[:, None], 0.0)
                grad = p - q
            tl.store(grad_rows + cols[None, :], grad.to(grad_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _scale_rows_kernel(grad_ptr, grad_row_stride, scale_ptr, scale_stride, n_rows, n_cols,
                       ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """grad[r, :] *= scale[r] in place, in float32 (so a half-precision gradient is rounded once more, not twice)."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    scale = tl.load(scale_ptr + rows * scale_stride, mask=row_ok, other=0.0).to(tl.float32)
    grad_rows = grad_ptr + rows[:, None] * grad_row_stride
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = row_ok[:, None] & (cols < n_cols)[None, :]
        grad = tl.load(grad_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
        tl.store(grad_rows + cols[None, :], (grad * scale[:, None]).to(grad_ptr.dtype.element_ty), mask=valid)


def cross_entropy_rows(student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, mode: tl.constexpr,
                       write_grad: bool, block_size: int | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the kernel: per-row float32 losses, and the unscaled gradient p - q* when asked for."""
    student, other = launch.row_major(student), launch.row_major(other)
    n_rows, n_cols = student.shape
    loss_rows = launch.empty((n_rows,), torch.float32, student.device)
    grad = launch.empty((n_rows, n_cols), student.dtype, student.device) if write_grad else None
    forget = mask if mask is not None else torch.zeros(n_cols, dtype=torch.bool, device=student.device)
    tile = launch.tiling(n_rows, n_cols, block_size)
    _reweighted_ce_kernel[tile.grid(n_rows)](
        student, student.stride(0), other, other.stride(0), forget.view(torch.int8), loss_rows,
        grad if grad is not None else loss_rows, grad.stride(0) if grad is not None else 0,
        n_rows, n_cols,
        MODE=mode, WRITE_GRAD=write_grad, ROWS=tile.rows, BLOCK=tile.block, num_warps=tile.num_warps,
    )
    return loss_rows, grad


class ReweightedCrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper: the forward leaves p - q* behind; backward scales it by grad_output in place.

    Scaling in place means one backward per forward: a second (retain_graph=True) raises instead of returning a
    gradient scaled twice. Targets and teachers get no gradient.
    """

    @staticmethod
    def forward(ctx, student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, mode: tl.constexpr,
                reduction: str, block_size: int | None) -> torch.Tensor:
        loss_rows, grad = cross_entropy_rows(student, other, mask, mode, ctx.needs_input_grad[0], block_size)
        ctx.grad = grad
        ctx.reduction = reduction
        ctx.n_rows = student.shape[0]
        return reduce_rows(loss_rows, reduction)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("the fused reweighted cross-entropy scales its saved gradient in place, so it "
                               "supports one backward per forward; recompute the loss instead of "
                               "retain_graph=True, or use backend='reference'")
        scale = grad_output.float()
        if ctx.reduction == "mean":
            scale = scale / ctx.n_rows
        scale_stride = scale.stride(0) if ctx.reduction == "none" else 0
        n_rows, n_cols = grad.shape
        tile = launch.tiling(n_rows, n_cols)
        _scale_rows_kernel[tile.grid(n_rows)](grad, grad.stride(0), scale, scale_stride, n_rows, n_cols,
                                              ROWS=tile.rows, BLOCK=tile.block, num_warps=tile.num_warps)
        return grad, None, None, None, None, None
