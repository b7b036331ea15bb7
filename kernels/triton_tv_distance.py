"""Batched total variation 0.5 * sum |p_a - p_b| over the last dimension, as a Triton kernel.

Both operands are viewed as [outer, inner, K]. The one shared across `outer` (the [B, K] side of [M, B, K]
against [B, K]) is `b`: a program loads its ROWS rows of `b` once, then walks the M rows of `a` that meet
them, so each input element is read once when a row fits one block (K <= 4096). Longer rows are read twice
(softmax statistics, then the distance) and `b`'s chunks once more per model. No gradient: the dispatch sends
inputs that require one to the PyTorch reference.

Importing this module needs Triton; `kernels.dispatch` imports it only when Triton is usable.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import launch


@triton.jit
def _probabilities(rows_ptr, row_ok, cols, col_ok, from_logits):
    """A block of rows as float32 probabilities: softmax of logits, or the probabilities as they are."""
    x = tl.load(rows_ptr[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    x = x.to(tl.float32)
    if from_logits != 0:
        x = tl.where(col_ok[None, :], x, float("-inf"))
        e = tl.exp(x - tl.max(x, axis=1)[:, None])
        x = e / tl.sum(e, axis=1)[:, None]
    return x


@triton.jit
def _softmax_stats(rows_ptr, row_ok, n_cols, ROWS: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    """Max and 1 / sum exp(x - max) per row, online over the chunks."""
    lanes = tl.arange(0, BLOCK)
    row_max = tl.full([ROWS], -1.0e30, tl.float32)
    row_sum = tl.zeros([ROWS], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + lanes
        col_ok = tl.max_constancy(cols < n_cols, ALIGN)
        x = tl.load(rows_ptr[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        x = tl.where(col_ok[None, :], x.to(tl.float32), float("-inf"))
        new_max = tl.maximum(row_max, tl.max(x, axis=1))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max[:, None]), axis=1)
        row_max = new_max
    return row_max, 1.0 / tl.where(row_ok, row_sum, 1.0)


@triton.jit
def _chunk_probabilities(rows_ptr, row_ok, cols, col_ok, row_max, row_inv, from_logits):
    x = tl.load(rows_ptr[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    x = x.to(tl.float32)
    if from_logits != 0:
        x = tl.exp(tl.where(col_ok[None, :], x, float("-inf")) - row_max[:, None]) * row_inv[:, None]
    return x


@triton.jit(do_not_specialize=["a_outer_stride", "a_inner_stride", "b_inner_stride", "n_outer", "n_inner",
                               "n_cols", "from_logits"])
def _tv_kernel(
    a_ptr, a_outer_stride: tl.int64, a_inner_stride: tl.int64,
    b_ptr, b_inner_stride: tl.int64,   # b has the same rows for every outer index
    out_ptr,                              # float32 [n_outer, n_inner]
    n_outer, n_inner: tl.int64, n_cols,
    from_logits,                          # 1: softmax both first; 0: they are probabilities
    ROWS: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr, ALIGN: tl.constexpr,
):
    inner = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = inner < n_inner
    a_rows = a_ptr + tl.multiple_of(inner * a_inner_stride, ALIGN)
    b_rows = b_ptr + tl.multiple_of(inner * b_inner_stride, ALIGN)
    out_rows = out_ptr + inner
    lanes = tl.arange(0, BLOCK)
    if SINGLE:
        col_ok = tl.max_constancy(lanes < n_cols, ALIGN)
        p_b = _probabilities(b_rows, row_ok, lanes, col_ok, from_logits)
        for outer in range(n_outer):
            p_a = _probabilities(a_rows + tl.multiple_of(outer * a_outer_stride, ALIGN), row_ok, lanes, col_ok,
                                 from_logits)
            tl.store(out_rows + outer * n_inner, 0.5 * tl.sum(tl.abs(p_a - p_b), axis=1), mask=row_ok)
    else:
        b_max = tl.zeros([ROWS], tl.float32)
        b_inv = tl.full([ROWS], 1.0, tl.float32)
        if from_logits != 0:
            b_max, b_inv = _softmax_stats(b_rows, row_ok, n_cols, ROWS, BLOCK, ALIGN)
        for outer in range(n_outer):
            a_outer = a_rows + tl.multiple_of(outer * a_outer_stride, ALIGN)
            a_max = tl.zeros([ROWS], tl.float32)
            a_inv = tl.full([ROWS], 1.0, tl.float32)
            if from_logits != 0:
                a_max, a_inv = _softmax_stats(a_outer, row_ok, n_cols, ROWS, BLOCK, ALIGN)
            total = tl.zeros([ROWS], tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + lanes
                col_ok = tl.max_constancy(cols < n_cols, ALIGN)
                p_a = _chunk_probabilities(a_outer, row_ok, cols, col_ok, a_max, a_inv, from_logits)
                p_b = _chunk_probabilities(b_rows, row_ok, cols, col_ok, b_max, b_inv, from_logits)
                total += tl.sum(tl.abs(p_a - p_b), axis=1)
            tl.store(out_rows + outer * n_inner, 0.5 * total, mask=row_ok)


def as_outer_inner(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both operands as [outer, inner, K] with `b` the same for every outer index (outer stride 0, or outer 1).

    TV is symmetric, so a shared `a` is swapped into `b`'s place; when neither is shared, the rows are
    flattened into one outer index. Every view is row-major with 16-byte aligned rows (copies only where needed).
    """
    shape = torch.broadcast_shapes(a.shape, b.shape)
    n_cols = shape[-1]
    n_inner = shape[-2] if len(shape) >= 2 else 1
    n_outer = math.prod(shape[:-2])

    def view(x: torch.Tensor) -> torch.Tensor:
        return x.expand(shape).reshape(n_outer, n_inner, n_cols)

    a_view, b_view = view(a), view(b)
    if n_outer > 1 and a_view.stride(0) == 0 and b_view.stride(0) != 0:
        a_view, b_view = b_view, a_view
    if n_outer == 1 or b_view.stride(0) != 0:  # nothing shared: one flat set of rows
        a_view, b_view = a_view.reshape(1, -1, n_cols), b_view.reshape(1, -1, n_cols)
    return rows_ready(a_view), rows_ready(b_view[:1])


def rows_ready(x: torch.Tensor) -> torch.Tensor:
    """Unit column stride and a 16-byte aligned start (row strides of 0 kept: a broadcast row is read in place)."""
    return x if x.stride(-1) == 1 and x.data_ptr() % launch.VECTOR_BYTES == 0 else launch.prepare(x)


def tv_launch(a: torch.Tensor, b: torch.Tensor, from_logits: bool, out: torch.Tensor) -> launch.Launch:
    """The launch for `a` against `b` into `out` (float32, broadcast shape without K); works on meta tensors."""
    if a.dtype != b.dtype:
        a, b = a.float(), b.float()
    a_view, b_view = as_outer_inner(a, b)
    n_outer, n_inner, n_cols = a_view.shape
    tile = launch.tiling(n_cols, (a_view.element_size(),), (*a_view.stride()[:2], b_view.stride(1)))
    args = (a_view, a_view.stride(0), a_view.stride(1), b_view, b_view.stride(1), out,
            n_outer, n_inner, n_cols, int(from_logits))
    return launch.Launch(_tv_kernel, tile.grid(n_inner), args, tile.constexprs())


def tv_distance_triton(a: torch.Tensor, b: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """float32 TV distances of shape broadcast(a, b)[:-1]."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    out = launch.empty(tuple(shape[:-1]), torch.float32, a.device)
    tv_launch(a, b, from_logits, out)()
    return out
