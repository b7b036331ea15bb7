"""Forward+backward time and peak memory of the reweighted cross-entropy on the CPU, implementations side by side.

    pytest bench/test_bench_kernels.py --benchmark-only [--benchmark-json=kernels.json]

Implementations (bench/kernel_cases.py): a naive eager composition (softmax, mask, renormalise, log_softmax,
multiply, sum), the PyTorch reference (autograd), the closed-form function eager and compiled, and what the
dispatch picks by itself. Every case runs them interleaved, round after round with the order rotating, so that
all see the same machine load; the table (printed at the end, pasted into bench/KERNELS.md) gives medians, the
interquartile range, the speed-up of medians over naive eager, peak memory and the error against float64.
The fused Triton kernel is timed on a GPU only (bench/gpu.sh): Triton's CPU interpreter is a test tool.

$KERNELS_BENCH_THREADS sets torch's CPU threads: on a machine shared with other jobs, one thread per process
gives steadier numbers than OpenMP threads that wait for a busy core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "inductor"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402
from kernel_cases import (  # noqa: E402
    BASELINE,
    CPU_IMPLEMENTATIONS,
    CPU_TARGET_SHAPES,
    cpu_peak_bytes,
    float64_errors,
    geometric_mean,
    interleaved_times,
    make_inputs,
    quartiles,
    training_step,
)

if "KERNELS_BENCH_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["KERNELS_BENCH_THREADS"]))
SHAPES = [(8192, 10), (8192, 100), (8192, 1000), (512, 32000)]
TABLE = "Reweighted cross-entropy, forward + backward, float32, CPU"
CHOICE = "dispatch (auto)"
LOSS_RTOL, GRAD_ATOL = 1e-6, 1e-5  # the accuracy targets against float64


def rounds_for(batch: int, classes: int) -> int:
    """About 20 s of work per case on 2 cores (at least 9 rounds for the quartiles)."""
    return max(9, min(60, 1_500_000_000 // (batch * classes * len(CPU_IMPLEMENTATIONS) * 30)))


@pytest.mark.parametrize("batch, classes", SHAPES, ids=[f"B{b}-K{k}" for b, k in SHAPES])
def test_forward_backward_side_by_side(benchmark: Any, bench_tables: dict, batch: int, classes: int) -> None:
    student, teacher, mask = make_inputs(batch, classes, torch.float32, "cpu")
    steps = {name: training_step(fn, student, teacher, mask) for name, fn in CPU_IMPLEMENTATIONS.items()}
    errors = {name: float64_errors(fn, student, teacher, mask) for name, fn in CPU_IMPLEMENTATIONS.items()}
    times = interleaved_times(steps, rounds_for(batch, classes))
    benchmark.pedantic(steps[CHOICE], rounds=3, warmup_rounds=0)  # pytest-benchmark's own record of the choice
    base = quartiles(times[BASELINE])[1]
    rows = bench_tables.setdefault(TABLE, [])
    for name, values in times.items():
        q1, median, q3 = quartiles(values)
        rows.append({"B": batch, "K": classes, "implementation": name, "median ms": median * 1e3,
                     "IQR ms": f"{q1 * 1e3:.3g}-{q3 * 1e3:.3g}", "x naive": base / median,
                     "peak MiB": cpu_peak_bytes(steps[name]) / 2**20,
                     "loss rel err": errors[name]["loss_rel_err"], "grad max err": errors[name]["grad_max_err"]})
    benchmark.extra_info.update(batch=batch, classes=classes, threads=torch.get_num_threads(),
                                load_average=os.getloadavg(), rounds=len(times[BASELINE]),
                                median_seconds={name: quartiles(v)[1] for name, v in times.items()}, errors=errors)
    for name in ("closed-form-eager", "closed-form-compiled", CHOICE):
        assert errors[name]["loss_rel_err"] <= LOSS_RTOL and errors[name]["grad_max_err"] <= GRAD_ATOL, errors[name]
    if (batch, classes) == CPU_TARGET_SHAPES[-1]:
        add_target_summary(bench_tables)


def add_target_summary(bench_tables: dict) -> None:
    """The issue's CPU target: geometric mean >= 2.5x naive eager over the three shapes, each >= 1.5x."""
    speedups = {(row["B"], row["K"]): row["x naive"] for row in bench_tables[TABLE] if row["implementation"] == CHOICE}
    measured = [speedups[shape] for shape in CPU_TARGET_SHAPES if shape in speedups]
    if len(measured) == len(CPU_TARGET_SHAPES):
        bench_tables.setdefault("CPU target (dispatch's choice vs naive eager)", []).append({
            "shapes": ", ".join(f"{b}x{k}" for b, k in CPU_TARGET_SHAPES), "geometric mean": geometric_mean(measured),
            "min": min(measured), "load average (1 min)": os.getloadavg()[0], "threads": torch.get_num_threads()})
