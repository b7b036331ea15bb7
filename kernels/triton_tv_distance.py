"""Batched total variation 0.5 * sum |p_a - p_b| over the last dimension, as a Triton kernel.

Rows are addressed as (outer, inner) pairs with a stride for each operand, so a [B, K] operand broadcast
against [M, B, K] (outer stride 0) is read in place instead of being copied M times. No gradient: the dispatch
sends inputs that require one to the PyTorch reference.

Importing this module needs Triton; `kernels.dispatch` imports it only when Triton is usable.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import launch


@triton.jit
def _softmax_stats(rows_ptr, row_ok, n_cols, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Running max and sum of exp(x - max) per row: the softmax normaliser in one sweep."""
    lanes = tl.arange(0, BLOCK)
    row_max = tl.full([ROWS], -1.0e30, tl.float32)
    row_sum = tl.zeros([ROWS], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + lanes
        col_ok = cols < n_cols
        x = tl.load(rows_ptr + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        x = tl.where(col_ok[None, :], x, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(x, axis=1))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max[:, None]), axis=1)
        row_max = new_max
    return row_max, row_sum


@triton.jit
def _tv_kernel(
    a_ptr, a_outer_stride, a_inner_stride,
    b_ptr, b_outer_stride, b_inner_stride,
    out_ptr,                      # float32 [n_rows]
    n_inner, n_rows, n_cols,
    FROM_LOGITS: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    outer = rows // n_inner
    inner = rows % n_inner
    a_rows = a_ptr + (outer * a_outer_stride + inner * a_inner_stride)[:, None]
    b_rows = b_ptr + (outer * b_outer_stride + inner * b_inner_stride)[:, None]
    lanes = tl.arange(0, BLOCK)
    if FROM_LOGITS:
        a_max, a_sum = _softmax_stats(a_rows, row_ok, n_cols, ROWS, BLOCK)
        b_max, b_sum = _softmax_stats(b_rows, row_ok, n_cols, ROWS, BLOCK)
        a_inv, b_inv = 1.0 / a_sum, 1.0 / b_sum
    total = tl.zeros([ROWS], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + lanes
        col_ok = cols < n_cols
        valid = row_ok[:, None] & col_ok[None, :]
        a = tl.load(a_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
        b = tl.load(b_rows + cols[None, :], mask=valid, other=0.0).to(tl.float32)
        if FROM_LOGITS:
            a = tl.exp(tl.where(col_ok[None, :], a, float("-inf")) - a_max[:, None]) * a_inv[:, None]
            b = tl.exp(tl.where(col_ok[None, :], b, float("-inf")) - b_max[:, None]) * b_inv[:, None]
        total += tl.sum(tl.abs(a - b), axis=1)
    tl.store(out_ptr + rows, 0.5 * total, mask=row_ok)


def as_outer_inner(x: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, int, int]:
    """`x` broadcast to `shape` and viewed as [outer, inner, K] (a copy only where no such view exists)."""
    n_inner = shape[-2] if len(shape) >= 2 else 1
    n_outer = math.prod(shape[:-2])
    view = launch.row_major(x.expand(shape).reshape(n_outer, n_inner, shape[-1]))
    return view, view.stride(0), view.stride(1)


def tv_distance_triton(a: torch.Tensor, b: torch.Tensor, from_logits: bool = True,
                       block_size: int | None = None) -> torch.Tensor:
    """float32 TV distances of shape broadcast(a, b)[:-1]."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    a_view, a_outer, a_inner = as_outer_inner(a, shape)
    b_view, b_outer, b_inner = as_outer_inner(b, shape)
    n_inner = a_view.shape[1]
    n_rows, n_cols = a_view.shape[0] * n_inner, shape[-1]
    out = launch.empty((n_rows,), torch.float32, a.device)
    tile = launch.tiling(n_rows, n_cols, block_size)
    _tv_kernel[tile.grid(n_rows)](
        a_view, a_outer, a_inner, b_view, b_outer, b_inner, out, n_inner, n_rows, n_cols,
        FROM_LOGITS=from_logits, ROWS=tile.rows, BLOCK=tile.block, num_warps=tile.num_warps,
    )
    return out.reshape(shape[:-1])
