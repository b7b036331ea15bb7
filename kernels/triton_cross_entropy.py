"""Fused reweighted cross-entropy: loss and gradient of -sum_y q*(y) log softmax(student)(y) in one kernel.

The forward writes the loss per row and the gradient (softmax(student) - q*) already scaled by the
reduction (1/B for the mean), rounded once to the student's dtype. Backward is then free when grad_output is
exactly 1 (the autograd seed of `loss.backward()`): it launches the same kernel in its backward phase, whose
programs read grad_output on the device and return at once, no host synchronisation. For any other
grad_output it recomputes the gradient from the saved inputs with the full scale, so a half-precision gradient
is still rounded once (not once in the forward and again after scaling).

Bytes per element of [B, K] (see bench/KERNELS.md): a row of K <= 4096 is loaded once and held in registers:
read student, read teacher, write gradient, the essential 3 passes. Longer rows are read twice (statistics,
then the gradient): 5 passes. Per block: two reduction trees (three for max-class), the maxima and the
sums each carried in one tree by joining their operands.

The cross term is accumulated as sum_y w_y (s_y - max s) with w_y >= 0 and s_y - max s <= 0: every addend has
the same sign, so the loss of a confident, well-fitted row is not lost to cancellation against log-sum-exp.

Importing this module needs Triton; `kernels.dispatch` imports it only when Triton is usable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from . import launch
from .reference import reduce_rows, take_gradient

PROPORTIONAL = tl.constexpr(0)
MAX_CLASS = tl.constexpr(1)
SOFT_TARGET = tl.constexpr(2)
MODES = {"proportional": PROPORTIONAL, "max-class": MAX_CLASS}

# Phases (a runtime argument, so that one compiled kernel serves all three)
LOSS_ONLY = tl.constexpr(0)    # evaluation: per-row loss, no gradient
FORWARD = tl.constexpr(1)      # loss and gradient scaled by grad_scale
BACKWARD = tl.constexpr(2)     # gradient scaled by grad_scale * grad_output, only rows where grad_output != 1

# A finite "minus infinity" for running maxima: exp(SENTINEL - m) is 0 and SENTINEL - SENTINEL is 0, so the
# first chunk and forget-only chunks need no special case and no inf - inf.
SENTINEL = tl.constexpr(-1.0e30)


@triton.jit
def _max2(a, b):
    """Row maxima of two [ROWS, BLOCK] tensors in one reduction tree."""
    return tl.split(tl.max(tl.join(a, b), axis=1))


@triton.jit
def _sum4(a, b, c, d):
    """Row sums of four [ROWS, BLOCK] tensors in one reduction tree."""
    ab, cd = tl.split(tl.sum(tl.join(tl.join(a, b), tl.join(c, d)), axis=1))
    a_sum, b_sum = tl.split(ab)
    c_sum, d_sum = tl.split(cd)
    return a_sum, b_sum, c_sum, d_sum


@triton.jit
def _load_block(student_ptr, other_ptr, forget_ptr, offsets, cols, col_ok, valid, MODE: tl.constexpr):
    """One block of student logits (-inf past K), and the teacher's logits (-inf past K; for PROPORTIONAL
    also on forget classes) or the target probabilities (0 past K), all in float32; the retained-class mask."""
    s = tl.load(student_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    s = tl.where(col_ok[None, :], s, float("-inf"))
    t = tl.load(other_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    if MODE == SOFT_TARGET:
        retained = col_ok
    else:
        retained = col_ok & (tl.load(forget_ptr + cols, mask=col_ok, other=1) == 0)
        t = tl.where((retained if MODE == PROPORTIONAL else col_ok)[None, :], t, float("-inf"))
    return s, t, retained


@triton.jit
def _store_grad(grad_ptr, offsets, valid, p, q, scale, phase):
    grad = (p - q) * scale[:, None]
    tl.store(grad_ptr + offsets, grad.to(grad_ptr.dtype.element_ty), mask=valid & (phase != LOSS_ONLY))


@triton.jit
def _single_block(student_ptr, other_ptr, forget_ptr, grad_ptr, rows, row_ok, row_start, n_cols, scale, phase,
                  MODE: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    """Rows that fit one block: every input element is loaded once; returns the per-row loss."""
    cols = tl.arange(0, BLOCK)
    col_ok = tl.max_constancy(cols < n_cols, ALIGN)
    valid = row_ok[:, None] & col_ok[None, :]
    offsets = row_start[:, None] + cols[None, :]
    s, t, retained = _load_block(student_ptr, other_ptr, forget_ptr, offsets, cols, col_ok, valid, MODE)
    if MODE == SOFT_TARGET:
        s_max = tl.max(s, axis=1)
    else:
        s_max, t_max = _max2(s, t)
    e_s = tl.exp(s - s_max[:, None])
    s_centred = tl.where(col_ok[None, :], s - s_max[:, None], 0.0)
    if MODE == SOFT_TARGET:
        s_sum, q_sum, cross, _ = _sum4(e_s, t, t * s_centred, tl.zeros_like(t))
        loss = q_sum * tl.log(s_sum) - cross
        q = t
        p = e_s * (q_sum / s_sum)[:, None]
    else:
        e_t = tl.exp(t - t_max[:, None])
        if MODE == PROPORTIONAL:
            s_sum, w_sum, cross, _ = _sum4(e_s, e_t, e_t * s_centred, tl.zeros_like(e_t))
            inv_norm = 1.0 / w_sum
            loss = tl.log(s_sum) - cross * inv_norm
            q = e_t * inv_norm[:, None]
        else:
            w = tl.where(retained[None, :], e_t, 0.0)
            s_sum, w_sum, forgotten, cross = _sum4(e_s, w, e_t - w, w * s_centred)
            best_t, best_col = tl.max(tl.where(retained[None, :], t, float("-inf")), axis=1, return_indices=True,
                                      return_indices_tie_break_left=True)
            best_s = tl.load(student_ptr + row_start + best_col, mask=row_ok, other=0.0).to(tl.float32)
            inv_norm = 1.0 / (w_sum + forgotten)
            loss = tl.log(s_sum) - (cross + forgotten * (best_s - s_max)) * inv_norm
            q = (w + tl.where(cols[None, :] == best_col[:, None], forgotten[:, None], 0.0)) * inv_norm[:, None]
        p = e_s / s_sum[:, None]
    _store_grad(grad_ptr, offsets, valid, p, q, scale, phase)
    return loss


@triton.jit
def _chunked(student_ptr, other_ptr, forget_ptr, grad_ptr, rows, row_ok, row_start, n_cols, scale, phase,
             MODE: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    """Rows longer than a block: online statistics over the chunks, then a second sweep for the gradient."""
    lanes = tl.arange(0, BLOCK)
    s_max = tl.full([ROWS], SENTINEL, tl.float32)      # student running max
    s_sum = tl.zeros([ROWS], tl.float32)               # sum exp(s - s_max)
    t_max = tl.full([ROWS], SENTINEL, tl.float32)      # teacher running max (retained classes for PROPORTIONAL)
    w_sum = tl.zeros([ROWS], tl.float32)               # sum of the weights w in `cross` (sum q for SOFT_TARGET)
    cross = tl.zeros([ROWS], tl.float32)               # sum w * (s - s_max), <= 0
    forgotten = tl.zeros([ROWS], tl.float32)           # MAX_CLASS: sum exp(t - t_max) over forget classes,
    best_t = tl.full([ROWS], SENTINEL, tl.float32)     #   the top retained teacher logit and its column
    best_col = tl.zeros([ROWS], tl.int32)
    for start in range(0, n_cols, BLOCK):
        cols = start + lanes
        col_ok = tl.max_constancy(cols < n_cols, ALIGN)
        valid = row_ok[:, None] & col_ok[None, :]
        offsets = row_start[:, None] + cols[None, :]
        s, t, retained = _load_block(student_ptr, other_ptr, forget_ptr, offsets, cols, col_ok, valid, MODE)
        if MODE == SOFT_TARGET:
            new_s_max = tl.maximum(s_max, tl.max(s, axis=1))
        else:
            chunk_s_max, chunk_t_max = _max2(s, t)
            new_s_max = tl.maximum(s_max, chunk_s_max)
            new_t_max = tl.maximum(t_max, chunk_t_max)
        e_s = tl.exp(s - new_s_max[:, None])
        s_centred = tl.where(col_ok[None, :], s - new_s_max[:, None], 0.0)
        shift = new_s_max - s_max
        if MODE == SOFT_TARGET:
            chunk_s_sum, chunk_q_sum, chunk_cross, _ = _sum4(e_s, t, t * s_centred, tl.zeros_like(t))
            cross = cross - w_sum * shift + chunk_cross
            w_sum = w_sum + chunk_q_sum
        else:
            alpha = tl.exp(t_max - new_t_max)
            e_t = tl.exp(t - new_t_max[:, None])
            if MODE == PROPORTIONAL:
                chunk_s_sum, chunk_w_sum, chunk_cross, _ = _sum4(e_s, e_t, e_t * s_centred, tl.zeros_like(e_t))
            else:
                w = tl.where(retained[None, :], e_t, 0.0)
                chunk_s_sum, chunk_w_sum, chunk_forgotten, chunk_cross = _sum4(e_s, w, e_t - w, w * s_centred)
                forgotten = forgotten * alpha + chunk_forgotten
                chunk_best, chunk_col = tl.max(tl.where(retained[None, :], t, float("-inf")), axis=1,
                                               return_indices=True, return_indices_tie_break_left=True)
                better = chunk_best > best_t  # strict: ties keep the first column, as torch.argmax does
                best_t = tl.where(better, chunk_best, best_t)
                best_col = tl.where(better, start + chunk_col, best_col)
            cross = (cross - w_sum * shift) * alpha + chunk_cross
            w_sum = w_sum * alpha + chunk_w_sum
            t_max = new_t_max
        s_sum = s_sum * tl.exp(s_max - new_s_max) + chunk_s_sum
        s_max = new_s_max
    # Each loop result gets exactly one use below: Triton's thread-locality pass (TritonGPUOptimizeThreadLocality)
    # asserts on a reduced loop result with several uses (the soft-target kernel failed to compile for sm_80/90).
    w_sum = tl.where(row_ok, w_sum, 0.0)
    inv_s_sum = 1.0 / s_sum
    log_s_sum = -tl.log(inv_s_sum)
    if MODE == SOFT_TARGET:
        loss = w_sum * log_s_sum - cross
        p_scale = w_sum * inv_s_sum
    elif MODE == PROPORTIONAL:
        inv_norm = 1.0 / w_sum
        loss = log_s_sum - cross * inv_norm
        p_scale = inv_s_sum
    else:
        best_s = tl.load(student_ptr + row_start + best_col, mask=row_ok, other=0.0).to(tl.float32)
        inv_norm = 1.0 / (w_sum + forgotten)
        loss = log_s_sum - (cross + forgotten * (best_s - s_max)) * inv_norm
        p_scale = inv_s_sum
    if phase != LOSS_ONLY:
        for start in range(0, n_cols, BLOCK):
            cols = start + lanes
            col_ok = tl.max_constancy(cols < n_cols, ALIGN)
            valid = row_ok[:, None] & col_ok[None, :]
            offsets = row_start[:, None] + cols[None, :]
            s, t, retained = _load_block(student_ptr, other_ptr, forget_ptr, offsets, cols, col_ok, valid, MODE)
            p = tl.exp(s - s_max[:, None]) * p_scale[:, None]
            if MODE == SOFT_TARGET:
                q = t
            else:
                q = tl.exp(t - t_max[:, None])
                if MODE == MAX_CLASS:
                    q = tl.where(retained[None, :], q, 0.0)
                    q += tl.where(cols[None, :] == best_col[:, None], forgotten[:, None], 0.0)
                q = q * inv_norm[:, None]
            _store_grad(grad_ptr, offsets, valid, p, q, scale, phase)
    return loss


@triton.jit(do_not_specialize=["grad_output_stride", "n_rows", "n_cols", "phase"])
def _reweighted_ce_kernel(
    student_ptr,                  # [B, K] row-major, any kernel dtype
    other_ptr,                    # [B, K]: teacher logits (PROPORTIONAL, MAX_CLASS) or target probabilities
    forget_ptr,                   # int8 [K], nonzero = forgotten class; unread for SOFT_TARGET
    loss_ptr,                     # float32 [B]; written in the LOSS_ONLY and FORWARD phases
    grad_ptr,                     # [B, K] in the student's dtype; written in the FORWARD and BACKWARD phases
    grad_output_ptr, grad_output_stride,  # float32; read in the BACKWARD phase (stride 0: one scalar)
    n_rows, n_cols,
    grad_scale,                   # the reduction's scale: 1/B for the mean, else 1
    phase,                        # LOSS_ONLY, FORWARD or BACKWARD
    MODE: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr, ALIGN: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    row_start = tl.multiple_of(rows * n_cols, ALIGN)
    # Backward: rows whose grad_output is exactly 1 already hold their gradient from the forward.
    grad_output = tl.load(grad_output_ptr + rows * grad_output_stride, mask=row_ok & (phase == BACKWARD),
                          other=1.0)
    scale = grad_output * grad_scale
    if (phase != BACKWARD) | (tl.max((grad_output != 1.0).to(tl.int32), axis=0) > 0):
        if SINGLE:
            loss = _single_block(student_ptr, other_ptr, forget_ptr, grad_ptr, rows, row_ok, row_start, n_cols,
                                 scale, phase, MODE, BLOCK, ALIGN)
        else:
            loss = _chunked(student_ptr, other_ptr, forget_ptr, grad_ptr, rows, row_ok, row_start, n_cols,
                            scale, phase, MODE, ROWS, BLOCK, ALIGN)
        tl.store(loss_ptr + rows, loss, mask=row_ok & (phase != BACKWARD))


def other_operand(student: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The teacher/target as the kernel reads it: in the student's dtype or float32 (so that 5 dtype pairs cover
    every input; a float32 student with a half-precision teacher gets the teacher in float32)."""
    return other if other.dtype in (student.dtype, torch.float32) else other.float()


def cross_entropy_launch(student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, mode: tl.constexpr,
                         loss_rows: torch.Tensor, grad: torch.Tensor | None, phase: tl.constexpr,
                         grad_scale: float, grad_output: torch.Tensor | None = None) -> launch.Launch:
    """The launch for prepared operands (`launch.prepare`); works on meta tensors, for the AOT check."""
    n_rows, n_cols = student.shape
    tile = launch.tiling(n_cols, (student.element_size(), other.element_size()))
    forget = mask if mask is not None else torch.zeros(n_cols, dtype=torch.bool, device=student.device)
    grad_output_stride = 1 if grad_output is not None and grad_output.numel() > 1 else 0
    args = (student, other, forget.view(torch.int8), loss_rows, grad if grad is not None else student,
            grad_output if grad_output is not None else loss_rows, grad_output_stride,
            n_rows, n_cols, float(grad_scale), int(phase))
    return launch.Launch(_reweighted_ce_kernel, tile.grid(n_rows), args, {"MODE": mode, **tile.constexprs()})


class ReweightedCrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper: the forward leaves the scaled gradient behind; backward is free for grad_output == 1.

    The gradient buffer is handed to autograd as it is, so one backward per forward (`take_gradient`). Student and
    teacher are saved for the backward's recomputation when grad_output != 1 (they are usually alive anyway: the
    caller holds them). Targets and teachers get no gradient.
    """

    @staticmethod
    def forward(ctx, student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, mode: tl.constexpr,
                reduction: str) -> torch.Tensor:
        student, other = launch.prepare(student), launch.prepare(other_operand(student, other))
        mask = launch.prepare(mask) if mask is not None else None
        n_rows = student.shape[0]
        write_grad = ctx.needs_input_grad[0]
        loss_rows = launch.empty((n_rows,), torch.float32, student.device)
        grad = launch.empty(tuple(student.shape), student.dtype, student.device) if write_grad else None
        grad_scale = 1.0 / n_rows if reduction == "mean" else 1.0
        cross_entropy_launch(student, other, mask, mode, loss_rows, grad, FORWARD if write_grad else LOSS_ONLY,
                             grad_scale)()
        if write_grad:
            ctx.save_for_backward(student, other, mask)
        ctx.grad, ctx.mode, ctx.grad_scale = grad, mode, grad_scale
        return reduce_rows(loss_rows, reduction)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad = take_gradient(ctx, "fused reweighted cross-entropy")
        student, other, mask = ctx.saved_tensors
        grad_output = launch.prepare(grad_output.float().reshape(-1))
        cross_entropy_launch(student, other, mask, ctx.mode, grad_output, grad, BACKWARD, ctx.grad_scale,
                             grad_output)()
        return grad, None, None, None, None
