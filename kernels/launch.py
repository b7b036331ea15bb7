"""Tile shapes shared by the Triton kernels: one program takes ROWS rows and walks K in chunks of BLOCK.

Small K packs many rows into one program (a row of 10 classes alone would leave most lanes idle); large K
takes one row per program and loops over chunks, so registers stay bounded for any K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_BLOCK = 4096        # columns per chunk (16 per thread at 8 warps); larger K loops
TILE_ELEMENTS = 4096    # rows x columns one program holds per chunk when K is small
POISON_OUTPUTS = False  # tests set it: output buffers then start as NaN, so any element a kernel skips shows


@dataclass(frozen=True)
class Tiling:
    rows: int
    block: int
    num_warps: int

    def grid(self, n_rows: int) -> tuple[int]:
        return (-(-n_rows // self.rows),)


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def tiling(n_rows: int, n_cols: int, block_size: int | None = None) -> Tiling:
    """`block_size` (a power of two) forces the chunk width; tests use it to exercise the chunked loop."""
    if block_size is not None and (block_size < 2 or block_size & (block_size - 1)):
        raise ValueError(f"block_size must be a power of two >= 2, got {block_size}")
    block = block_size or min(next_power_of_2(n_cols), MAX_BLOCK)
    rows = max(1, min(TILE_ELEMENTS // block, next_power_of_2(n_rows)))
    num_warps = max(1, min(8, rows * block // 512))
    return Tiling(rows=rows, block=block, num_warps=num_warps)


def row_major(x: torch.Tensor) -> torch.Tensor:
    """Kernels index rows by a stride and columns contiguously."""
    return x if x.stride(-1) == 1 else x.contiguous()


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every kernel output buffer is allocated here (see POISON_OUTPUTS)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_OUTPUTS else out
