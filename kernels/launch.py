"""How the Triton kernels are launched: the tiling, the operands' layout, and a launch record that the
ahead-of-time check (`kernels.aot`) compiles exactly as the dispatch would run it.

Tiling. A program owns ROWS whole rows. When a row fits one block (K <= 1024, or K <= 4096 with vector loads)
it is loaded once and kept in registers: the inputs are read once and the gradient written once (3 passes
over [B, K]). Longer rows are walked in chunks twice (statistics, then the gradient: 5 passes). Small K packs
many rows into a program (a row of 10 classes alone would leave most lanes idle). The tiling depends on K and
the dtypes only, never on B, so an odd last batch reuses the compiled kernel, and the set of tilings is finite:
`all_tilings` lists it, and `python -m fastforget_kernels.aot` compiles every one for sm_80 and sm_90 (no register
spills allowed).

Vector loads. Triton proves 16-byte alignment only for integers divisible by 16. The kernels take ALIGN (in
elements) instead: when K and every row stride are multiples of 16 bytes' worth of elements, the kernel says
so with `tl.multiple_of` / `tl.max_constancy`, and K = 1000 gets 16-byte loads (a multiple of 8 bf16 or 4 fp32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

SMALL_BLOCKS = (16, 128)  # rows this short: many rows per program, 4 elements per thread (fewer per-row registers)
WIDE_BLOCK = 1024         # one or two rows per program, 8 elements per thread
ALIGNED_BLOCK = 4096      # held whole only with vector loads: unaligned scalar loads of 4096 columns would spill
CHUNK_BLOCK = 2048        # chunk width for rows held in two sweeps (half that with scalar loads: fewer registers)
VECTOR_BYTES = 16         # the widest global load (ld.global.v4.b32)
POISON_OUTPUTS = False    # tests set it: output buffers then start as NaN, so any element a kernel skips shows


@dataclass(frozen=True)
class Tiling:
    rows: int       # rows per program
    block: int      # columns per load
    single: bool    # the whole row fits one block: loaded once
    align: int      # K and every row stride are multiples of this many elements (1: scalar loads)
    num_warps: int

    def grid(self, n_rows: int) -> tuple[int]:
        return (-(-n_rows // self.rows),)

    def constexprs(self) -> dict[str, int | bool]:
        return {"ROWS": self.rows, "BLOCK": self.block, "SINGLE": self.single, "ALIGN": self.align,
                "num_warps": self.num_warps}


def vector_elements(itemsizes: tuple[int, ...]) -> int:
    """Elements per 16-byte load of the narrowest operand (wider operands then get 16-byte loads too)."""
    return VECTOR_BYTES // min(itemsizes)


def tiling(n_cols: int, itemsizes: tuple[int, ...], row_strides: tuple[int, ...] = ()) -> Tiling:
    """The tiling for rows of `n_cols` columns whose operands have these element sizes and row strides."""
    vector = vector_elements(itemsizes)
    aligned = all(x % vector == 0 for x in (n_cols, *row_strides))
    align = vector if aligned else 1
    for block in SMALL_BLOCKS:
        if n_cols <= block:
            return Tiling(rows=1024 // block, block=block, single=True, align=1, num_warps=8)
    if n_cols <= WIDE_BLOCK:
        return Tiling(rows=2, block=WIDE_BLOCK, single=True, align=align, num_warps=8)
    if n_cols <= ALIGNED_BLOCK and aligned:
        return Tiling(rows=1, block=ALIGNED_BLOCK, single=True, align=align, num_warps=16)
    return Tiling(rows=1, block=CHUNK_BLOCK if aligned else CHUNK_BLOCK // 2, single=False, align=align, num_warps=8)


def all_tilings(itemsizes: tuple[int, ...]) -> list[Tiling]:
    """Every tiling `tiling` can return for operands of these element sizes."""
    return sorted({tiling(example, itemsizes) for example in EXAMPLE_COLUMNS},
                  key=lambda t: (not t.single, t.block, t.align))


# Columns that reach every branch of `tiling`, aligned (a multiple of 16) and not (odd).
EXAMPLE_COLUMNS = (2, *SMALL_BLOCKS, WIDE_BLOCK, WIDE_BLOCK - 1, ALIGNED_BLOCK, ALIGNED_BLOCK - 1,
                   2 * ALIGNED_BLOCK, 2 * ALIGNED_BLOCK - 1)


@contextlib.contextmanager
def forced_chunks(width: int) -> Iterator[None]:
    """Every row longer than `width` takes the two-sweep chunked path with chunks of `width` columns (tests use
    it to walk the chunk loop at small K, cheaply under the interpreter; such tilings are not AOT-compiled)."""
    names = ("SMALL_BLOCKS", "WIDE_BLOCK", "ALIGNED_BLOCK", "CHUNK_BLOCK")
    saved = {name: globals()[name] for name in names}
    globals().update(SMALL_BLOCKS=(width,), WIDE_BLOCK=width, ALIGNED_BLOCK=width, CHUNK_BLOCK=width)
    try:
        yield
    finally:
        globals().update(saved)


def prepare(x: torch.Tensor) -> torch.Tensor:
    """Row-major and 16-byte aligned, so that every launch matches a specialization the AOT check compiled
    (Triton specializes pointers on 16-byte alignment). Copies only views that are neither."""
    x = x.contiguous()
    return x if x.data_ptr() % VECTOR_BYTES == 0 else x.clone()


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every kernel output buffer is allocated here (see POISON_OUTPUTS)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_OUTPUTS and device.type != "meta" else out


@dataclass
class Launch:
    """One kernel launch, described before it runs: `kernels.aot` compiles it for a GPU that is not there."""

    kernel: Any                      # a triton.jit function
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.constexprs)
