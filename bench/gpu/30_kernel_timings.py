"""Step 30: the fused kernels against the memory-bandwidth floor, bfloat16 first.

Reweighted cross-entropy, forward + backward (the autograd seed, so the fused backward is free): naive eager,
the reference under torch.compile (K >= 1000, where the issue compares them) and the fused Triton kernel, each
beside a device copy moving the essential bytes (read student, read teacher, write the gradient). TV distance,
[M, B, K] against [B, K]: the fused kernel and the reference against a copy of the inputs' bytes. Each fused
case is checked against float64 first. Targets (issue 9): fused >= 80% of copy bandwidth for B*K >= 64M,
>= 3x naive eager and faster than the compiled reference for K >= 1000; TV >= 80%.
"""
# budget: 100

from common import Step, copy_floor_ms, median_ms

step = Step(__doc__)

import sys  # noqa: E402

import torch  # noqa: E402
from kernel_cases import (  # noqa: E402
    GPU_IMPLEMENTATIONS,
    cuda_peak_bytes,
    essential_bytes,
    float64_errors,
    fused_bytes,
    make_inputs,
    training_step,
)

import fastforget_kernels as kernels  # noqa: E402

if step.cuda:
    SHAPES = [(8192, 10), (8192, 1000), (65536, 1000), (512, 32000), (4096, 32000), (1048576, 10), (1024, 65536),
              (256, 256000)]
    DTYPES = [torch.bfloat16, torch.float32]
    TV_SHAPES = [((8, 8192, 1000), (8192, 1000)), ((8, 65536, 1000), (65536, 1000)), ((4096, 32000), (4096, 32000))]
else:
    SHAPES, DTYPES, TV_SHAPES = [(64, 10), (4, 1000)], [torch.float32], [((2, 16, 100), (16, 100))]
IMPLS = GPU_IMPLEMENTATIONS if step.cuda else {k: v for k, v in GPU_IMPLEMENTATIONS.items()
                                               if k != "reference-compiled"}
CE_TABLE = "Reweighted cross-entropy, forward + backward"
TV_TABLE = "TV distance"


def cross_entropy_case(batch: int, classes: int, dtype: torch.dtype) -> None:
    student, teacher, mask = make_inputs(batch, classes, dtype, step.device)
    essential = essential_bytes(student.element_size(), teacher.element_size()) * student.numel()
    floor = copy_floor_ms(essential, step.device, step.cuda)
    errors = float64_errors(IMPLS["fused-triton"], student, teacher, mask)
    if errors["loss_rel_err"] > 1e-4 or errors["grad_max_err"] > (2e-2 if dtype != torch.float32 else 1e-5):
        step.fail(f"fused kernel off float64 at B={batch} K={classes} {dtype}: {errors}")
    for impl, fn in IMPLS.items():
        if impl == "reference-compiled" and classes < 1000:
            continue
        step_fn = training_step(fn, student, teacher, mask)
        step_fn()
        ms = median_ms(step_fn, step.cuda)
        row = {"B": batch, "K": classes, "dtype": str(dtype).removeprefix("torch."), "impl": impl, "ms": ms,
               "copy floor ms": floor, "GB/s (essential)": essential / ms / 1e6, "fraction of copy": floor / ms,
               "peak MiB": cuda_peak_bytes(step_fn) / 2**20 if step.cuda else None}
        if impl == "fused-triton":
            moved = fused_bytes(student.element_size(), teacher.element_size(), classes)
            row.update(errors, **{"bytes/element moved": moved,
                                  "bytes/element essential": essential // student.numel()})
        step.record(CE_TABLE, row)


def tv_case(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    a, b = torch.randn(shape_a, device=step.device), torch.randn(shape_b, device=step.device)
    essential = a.nbytes + b.nbytes
    floor = copy_floor_ms(essential, step.device, step.cuda)
    expected = kernels.tv_distance(a.double(), b.double())
    for from_logits in (True, False):
        x, y = (a, b) if from_logits else (a.softmax(-1), b.softmax(-1))
        for backend in ("reference", "triton"):
            ms = median_ms(lambda x=x, y=y, logits=from_logits, backend=backend:
                           kernels.tv_distance(x, y, logits, backend=backend), step.cuda)
            row = {"shape": f"{list(shape_a)} vs {list(shape_b)}", "from_logits": from_logits, "impl": backend,
                   "ms": ms, "copy floor ms": floor, "GB/s (essential)": essential / ms / 1e6,
                   "fraction of copy": floor / ms}
            if from_logits:
                row["max abs err vs float64"] = float((kernels.tv_distance(x, y, backend=backend) - expected).abs()
                                                      .max())
                if row["max abs err vs float64"] > 1e-5:
                    step.fail(f"TV {backend} off float64 by {row['max abs err vs float64']:.2g} at {shape_a}")
            step.record(TV_TABLE, row)


for dtype in DTYPES:
    for batch, classes in SHAPES:
        if not step.out_of_time(f"cross-entropy B={batch} K={classes} {dtype}"):
            cross_entropy_case(batch, classes, dtype)
for shape_a, shape_b in TV_SHAPES:
    if not step.out_of_time(f"TV {shape_a} vs {shape_b}"):
        tv_case(shape_a, shape_b)
sys.exit(step.finish())
