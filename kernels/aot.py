"""Ahead-of-time compile check: every Triton specialization the library can launch, compiled for a GPU that is
not there.

    python -m fastforget_kernels.aot                          # sm_80 and sm_90
    python -m fastforget_kernels.aot --arch sm_90 --jobs 4    # one arch, four compile processes
    python -m fastforget_kernels.aot --list                   # the specializations only, no compiling
    python -m fastforget_kernels.aot --only MODE=2            # the soft-target kernels only

The launches come from the launchers themselves (`cross_entropy_launch`, `tv_launch`) called on meta tensors
over a grid of shapes: every tiling `launch.all_tilings` can return, the K = 2 .. 256000 and B = 1 .. 1M of the
issue, every mode, dtype pair and phase. Each launch is specialized by Triton's own binder for the target
(`create_function_from_signature`, as `JITFunction.run` does: pointer alignment, integer types), identical
specializations are compiled once, through `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`.
One row per specialization: registers, spills, shared memory, widest global load. Exits non-zero on any
compile failure, any spill, or an aligned tiling without 16-byte loads. Needs Triton with its NVIDIA backend
(ptxas ships in the wheel), no GPU, and TRITON_INTERPRET unset (the interpreter never compiles).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib
import io
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterator

import torch

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CROSS_ENTROPY_COLUMNS = (2, 10, 100, 255, 256, 1000, 1024, 4096, 32000, 256000)
BATCH_SIZES = (1, 7, 8192, 1 << 20)
TV_MODELS = (1, 8)  # models stacked against one: [M, B, K] vs [B, K]


@dataclasses.dataclass(frozen=True)
class Specialization:
    """What Triton compiles for one launch: the kernel, its signature, constexprs and attributes."""

    module: str
    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[tuple[int, ...], object], ...]
    attrs: tuple[tuple[tuple[int, ...], str], ...]
    options: tuple[tuple[str, object], ...]

    def constants(self) -> dict[str, object]:
        return {self.signature[path[0]][0]: value for path, value in self.constexprs}

    def describe(self) -> str:
        """The first two operands' dtypes and the constexprs, e.g. `student=bf16 other=fp32 MODE=0 ROWS=4 ...`"""
        pointers = [f"{name.removesuffix('_ptr')}={kind[1:]}" for name, kind in self.signature if kind[0] == "*"]
        return " ".join(pointers[:2] + [f"{k}={v}" for k, v in self.constants().items()])


def meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def dtype_pairs() -> Iterator[tuple[torch.dtype, torch.dtype]]:
    """(student, teacher/target) as `other_operand` leaves them: the student's dtype or float32."""
    for student in KERNEL_DTYPES:
        for other in KERNEL_DTYPES:
            yield student, other


def launches() -> Iterator[tuple[str, object]]:
    """(what, launch) for every launch the grid of shapes makes the launchers issue."""
    from . import launch
    from . import triton_cross_entropy as ce
    from . import triton_tv_distance as tv

    for student_dtype, other_dtype in dtype_pairs():
        columns = sorted({*CROSS_ENTROPY_COLUMNS, *launch.EXAMPLE_COLUMNS})
        for n_cols in columns:
            for n_rows in BATCH_SIZES:
                student = meta((n_rows, n_cols), student_dtype)
                other = ce.other_operand(student, meta((n_rows, n_cols), other_dtype))
                mask = meta((n_cols,), torch.bool)
                loss = meta((n_rows,), torch.float32)
                for mode in (ce.PROPORTIONAL, ce.MAX_CLASS, ce.SOFT_TARGET):
                    forget = None if mode == ce.SOFT_TARGET else mask
                    what = f"cross-entropy mode={mode} B={n_rows} K={n_cols}"
                    yield what, ce.cross_entropy_launch(student, other, forget, mode, loss, None, ce.LOSS_ONLY, 1.0)
                    yield what, ce.cross_entropy_launch(student, other, forget, mode, loss, student, ce.FORWARD,
                                                        1.0 / n_rows)
                    for grad_output in (meta((1,), torch.float32), loss):
                        yield what, ce.cross_entropy_launch(student, other, forget, mode, grad_output, student,
                                                            ce.BACKWARD, 1.0, grad_output)
    for dtype in KERNEL_DTYPES:
        columns = sorted({*CROSS_ENTROPY_COLUMNS, *launch.EXAMPLE_COLUMNS})
        for n_cols in columns:
            for n_rows in BATCH_SIZES:
                for models in TV_MODELS:
                    a, b = meta((models, n_rows, n_cols), dtype), meta((n_rows, n_cols), dtype)
                    for from_logits in (True, False):
                        what = f"tv M={models} B={n_rows} K={n_cols} from_logits={from_logits}"
                        yield what, tv.tv_launch(a, b, from_logits, meta((models, n_rows), torch.float32))


@functools.cache
def binder(kernel, target):
    """Triton's argument binder for `kernel` on `target`: the function `JITFunction.run` specializes with."""
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    return backend, create_function_from_signature(kernel.signature, kernel.params, backend)


def specialize(launch, target) -> Specialization:
    """Triton's launch-time specialization of this launch for `target` (what `JITFunction.run` computes)."""
    kernel = launch.kernel
    backend, bind = binder(kernel, target)
    bound_args, specialization, options = bind(*launch.args, **launch.constexprs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, dict(launch.constexprs), bound_args,
                                                              specialization, options)
    return Specialization(
        module=kernel.fn.__module__, kernel=kernel.fn.__name__,
        signature=tuple(signature.items()),
        constexprs=tuple(sorted((path, getattr(v, "value", v)) for path, v in constexprs.items())),
        attrs=tuple(sorted((path, repr(v)) for path, v in attrs.items() if v)),
        options=tuple(sorted((k, v) for k, v in options.__dict__.items() if isinstance(v, (int, str, bool)))),
    )


@dataclasses.dataclass
class Result:
    spec: Specialization
    arch: str
    seconds: float
    error: str | None = None
    registers: int = 0
    spill_bytes: int = 0
    shared_bytes: int = 0
    load_bytes: int = 0      # widest global load
    aligned: bool = False    # the tiling promised vector loads (ALIGN > 1)


def ptx_load_bytes(ptx: str) -> int:
    widths = [int(v or 1) * int(bits) // 8 for v, bits in re.findall(r"ld\.global(?:\.\w+)*?(?:\.v(\d))?\.[bfsu](\d+)",
                                                                  ptx)]
    return max(widths, default=0)


def ptxas_usage(log: str) -> tuple[int, int]:
    """Registers and spilled bytes (stores + loads) from ptxas -v, which Triton runs for every cubin."""
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", log)
    if registers is None:
        raise RuntimeError(f"no register count in the ptxas log: {log[:200]!r}")
    return int(registers.group(1)), sum(map(int, spills))


def compile_one(spec: Specialization, arch: str) -> Result:
    """Compile one specialization for sm_<arch> (runs in a worker process)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    knobs.compilation.always_compile = True  # a cache hit would skip ptxas, whose log has the registers
    knobs.nvidia.dump_ptxas_log = True       # printed by Triton after ptxas: captured below
    kernel = getattr(importlib.import_module(spec.module), spec.kernel)
    capability = int(arch.removeprefix("sm_"))
    start = time.perf_counter()
    source = ASTSource(kernel, dict(spec.signature), dict(spec.constexprs),
                       {path: eval(value) for path, value in spec.attrs})  # noqa: S307 (our own repr of lists)
    result = Result(spec, arch, 0.0, aligned=spec.constants().get("ALIGN", 1) > 1)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=dict(spec.options))
    except Exception as error:  # noqa: BLE001 (any compiler failure is the finding)
        result.error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"
        result.seconds = time.perf_counter() - start
        return result
    result.seconds = time.perf_counter() - start
    result.registers, result.spill_bytes = ptxas_usage(log.getvalue())
    result.shared_bytes = compiled.metadata.shared
    result.load_bytes = ptx_load_bytes(compiled.asm["ptx"])
    return result


def problems(result: Result) -> list[str]:
    found = []
    if result.error:
        found.append(f"compile failed: {result.error}")
    else:
        if result.spill_bytes:
            found.append(f"{result.spill_bytes} bytes of register spills")
        if result.aligned and result.load_bytes < 16:
            found.append(f"ALIGN > 1 but the widest global load is {result.load_bytes} bytes, not 16")
    return found


def collect(archs: list[str]) -> tuple[dict[tuple[str, Specialization], list[str]], int]:
    from triton.backends.compiler import GPUTarget

    targets = {arch: GPUTarget("cuda", int(arch.removeprefix("sm_")), 32) for arch in archs}
    unique: dict[tuple[str, Specialization], list[str]] = {}
    count = 0
    for what, launch in launches():
        for arch in archs:
            spec = specialize(launch, targets[arch])
            unique.setdefault((arch, spec), []).append(what)
            count += 1
    return unique, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastforget_kernels.aot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", choices=["sm_80", "sm_90"],
                        help="target (repeatable; default: sm_80 and sm_90)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes (default: CPUs)")
    parser.add_argument("--list", action="store_true", help="list the specializations, compile nothing")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="keep the specializations whose description contains TEXT (repeatable: all must match), "
                             "e.g. --only MODE=2 --only SINGLE=False")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        print("fastforget_kernels.aot: TRITON_INTERPRET is set, so Triton would interpret instead of compiling; "
              "run it with "
              "`env -u TRITON_INTERPRET python -m fastforget_kernels.aot`", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401  (the NVIDIA backend)
    except ImportError as error:
        print(f"fastforget_kernels.aot: needs Triton with its NVIDIA backend ({error}); pip install triton",
              file=sys.stderr)
        return 2
    archs = args.arch or ["sm_80", "sm_90"]
    start = time.perf_counter()
    unique, count = collect(archs)
    unique = {key: whats for key, whats in unique.items() if all(text in key[1].describe() for text in args.only)}
    print(f"{count} launches over the shape grid -> {len(unique)} specializations to compile "
          f"({', '.join(archs)}), specialized in {time.perf_counter() - start:.1f} s")
    if args.list:
        for (arch, spec), whats in unique.items():
            print(f"{arch} {spec.kernel} {spec.describe()}  ({len(whats)} launches, e.g. {whats[0]})")
        return 0
    header = f"{'arch':6} {'kernel':24} {'specialization':70} {'regs':>4} {'spill':>5} {'smem':>6} {'load':>4} {'s':>5}"
    print(header)
    failures = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=context) as pool:
        futures = [pool.submit(compile_one, spec, arch) for arch, spec in unique]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            found = problems(result)
            status = "FAILED " + "; ".join(found) if found else ""
            print(f"{result.arch:6} {result.spec.kernel:24} {result.spec.describe():70} {result.registers:4d} "
                  f"{result.spill_bytes:5d} {result.shared_bytes:6d} {result.load_bytes:3d}B {result.seconds:5.1f} "
                  f"{status}", flush=True)
            if found:
                failures.append(result)
    elapsed = time.perf_counter() - start
    print(f"{len(unique)} specializations compiled in {elapsed:.0f} s with {args.jobs} processes: "
          f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
