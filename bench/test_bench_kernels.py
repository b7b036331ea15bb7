"""Forward+backward time and peak memory of the reweighted cross-entropy, implementations side by side.

    pytest bench/test_bench_kernels.py --benchmark-only [--benchmark-json=kernels.json]
    python bench/test_bench_kernels.py kernels.json      # the markdown table of bench/KERNELS.md

Implementations: a naive eager composition (softmax, mask, renormalise, log_softmax, multiply, sum), the
PyTorch reference eager and under torch.compile, and the fused Triton kernel (CUDA only: Triton's CPU
interpreter is a test tool, not something to time).

Peak memory is the most bytes live above what was allocated before the step (inputs excluded), over one
forward+backward, gradient of the student included: on CUDA from torch.cuda.max_memory_allocated, on CPU
from the profiler's allocation events (every allocation and free of PyTorch's CPU allocator, replayed in order).

$KERNELS_BENCH_THREADS sets torch's CPU threads: on a machine shared with other jobs, one thread per process
gives steadier numbers than OpenMP threads that wait for a busy core.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "inductor"))

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.dispatch import reweighted_cross_entropy_with_mask  # noqa: E402

if "KERNELS_BENCH_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["KERNELS_BENCH_THREADS"]))
ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
SHAPES = [(8192, 10), (8192, 100), (8192, 1000), (512, 32000)]
DTYPES = [torch.float32, torch.bfloat16] if ON_CUDA else [torch.float32]
BASELINE = "naive-eager"


def naive_eager(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What one writes without thinking about it: renormalise the masked probabilities by division."""
    probs = teacher.float().softmax(dim=1) * ~mask
    target = probs / probs.sum(dim=1, keepdim=True)
    return -(target * student.float().log_softmax(dim=1)).sum(dim=1).mean()


def through_dispatch(backend: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return reweighted_cross_entropy_with_mask(student, teacher, mask, "proportional", "mean", backend=backend)
    return loss


IMPLEMENTATIONS = {
    BASELINE: naive_eager,
    "reference-eager": through_dispatch("reference"),
    "reference-compiled": through_dispatch("compiled"),
    "fused-triton": through_dispatch("triton"),
}


def make_inputs(batch: int, classes: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    student = (torch.randn(batch, classes, generator=gen, device=device) * 3).to(dtype).requires_grad_()
    teacher = (torch.randn(batch, classes, generator=gen, device=device) * 3).to(dtype)
    mask = torch.zeros(classes, dtype=torch.bool, device=device)
    mask[classes // 3] = True
    return student, teacher, mask


def training_step(loss_fn: Callable, student: torch.Tensor, teacher: torch.Tensor,
                  mask: torch.Tensor) -> Callable[[], None]:
    """One forward+backward, synchronised so that wall time covers the device's work."""
    def step() -> None:
        loss_fn(student, teacher, mask).backward()
        student.grad = None
        if student.is_cuda:
            torch.cuda.synchronize()
    return step


def cpu_peak_bytes(step: Callable[[], None]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, pending = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.typed[0] == _EventType.Allocation:
            events.append((event.start_time_ns, event.typed[1].alloc_size))  # negative for a free
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    if device.type != "cuda":
        return cpu_peak_bytes(step)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("batch, classes", SHAPES, ids=[f"B{b}-K{k}" for b, k in SHAPES])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_forward_backward(benchmark, impl, batch, classes, dtype):
    if impl == "fused-triton" and not ON_CUDA:
        pytest.skip("no CUDA GPU here: the fused Triton kernel is timed on a GPU only (bench/gpu.sh)")
    student, teacher, mask = make_inputs(batch, classes, dtype, DEVICE)
    loss_fn = IMPLEMENTATIONS[impl]
    if impl == "reference-compiled":
        torch._dynamo.reset()  # compile for this shape, not a dynamic-shape graph left by the previous case
    expected = naive_eager(student.detach(), teacher, mask)
    torch.testing.assert_close(loss_fn(student, teacher, mask).float(), expected, rtol=1e-3, atol=1e-3)
    step = training_step(loss_fn, student, teacher, mask)
    step()  # warm-up: compilation and first-touch allocations stay out of the numbers
    benchmark.group = f"B={batch} K={classes} {dtype}"
    benchmark.extra_info.update(impl=impl, batch=batch, classes=classes, dtype=str(dtype), device=str(DEVICE),
                                threads=torch.get_num_threads(), peak_bytes=peak_bytes(step, DEVICE))
    rounds = max(5, min(50, 160_000_000 // (batch * classes)))  # about 0.5-1 s of work for every case on CPU
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)


def markdown_table(results: dict) -> str:
    """Median time and peak memory per case, with ratios to the naive eager composition of the same case."""
    cases: dict[tuple, dict[str, dict]] = {}
    for bench in results["benchmarks"]:
        info = bench["extra_info"]
        cases.setdefault((info["batch"], info["classes"], info["dtype"]), {})[info["impl"]] = {
            "ms": bench["stats"]["median"] * 1e3, "mib": info["peak_bytes"] / 2**20}
    lines = ["| B | K | dtype | implementation | median fwd+bwd (ms) | speed-up vs naive | peak memory (MiB) "
             "| memory vs naive |", "|---:|---:|---|---|---:|---:|---:|---:|"]
    for (batch, classes, dtype), impls in sorted(cases.items()):
        base = impls.get(BASELINE)
        for impl, row in impls.items():
            speedup = f"{base['ms'] / row['ms']:.2f}x" if base else "-"
            memory = f"{row['mib'] / base['mib']:.2f}x" if base and base["mib"] else "-"
            lines.append(f"| {batch} | {classes} | {dtype.removeprefix('torch.')} | {impl} | {row['ms']:.2f} "
                         f"| {speedup} | {row['mib']:.1f} | {memory} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/test_bench_kernels.py RESULTS.json (from --benchmark-json)")
    print(markdown_table(json.loads(Path(sys.argv[1]).read_text())))
