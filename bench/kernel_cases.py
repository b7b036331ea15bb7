"""What the kernel benchmarks share (bench/test_bench_kernels.py on the CPU, bench/gpu/ on a GPU): inputs, the
implementations compared, the float64 check, side-by-side timing, peak memory and the bytes each kernel moves.

Not a test module: imported by both, with bench/ on sys.path.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastforget_kernels import reference
from fastforget_kernels.dispatch import reweighted_cross_entropy_with_mask

CPU_TARGET_SHAPES = [(8192, 10), (8192, 1000), (512, 32000)]  # the CPU targets
BASELINE = "naive-eager"


def naive_eager(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What one writes without thinking about it: renormalise the masked probabilities by division."""
    probs = teacher.float().softmax(dim=1) * ~mask
    target = probs / probs.sum(dim=1, keepdim=True)
    return -(target * student.float().log_softmax(dim=1)).sum(dim=1).mean()


def through_dispatch(backend: str | None) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return reweighted_cross_entropy_with_mask(student, teacher, mask, "proportional", "mean", backend=backend)
    return loss


def closed_form(form: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    from fastforget_kernels.cpu_cross_entropy import ClosedFormCrossEntropyFunction

    def loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ClosedFormCrossEntropyFunction.apply(student, teacher, mask, "proportional", "mean", form)
    return loss


@functools.cache
def compiled_reference() -> Callable:
    return torch.compile(reference.reweighted_cross_entropy_reference)


def reference_compiled(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return compiled_reference()(student, teacher, mask, "proportional", "mean")


CPU_IMPLEMENTATIONS = {
    BASELINE: naive_eager,
    "reference-eager": through_dispatch("reference"),
    "closed-form-eager": closed_form("eager"),
    "closed-form-compiled": closed_form("compiled"),
    "dispatch (auto)": through_dispatch(None),
}
GPU_IMPLEMENTATIONS = {
    BASELINE: naive_eager,
    "reference-compiled": reference_compiled,
    "fused-triton": through_dispatch("triton"),
}


def make_inputs(batch: int, classes: int, dtype: torch.dtype, device: torch.device | str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    student = (torch.randn(batch, classes, generator=gen, device=device) * 3).to(dtype).requires_grad_()
    teacher = (torch.randn(batch, classes, generator=gen, device=device) * 3).to(dtype)
    mask = torch.zeros(classes, dtype=torch.bool, device=device)
    mask[classes // 3] = True
    return student, teacher, mask


def training_step(loss_fn: Callable, student: torch.Tensor, teacher: torch.Tensor,
                  mask: torch.Tensor) -> Callable[[], None]:
    """One forward+backward (no synchronisation: the GPU timers take care of it)."""
    def step() -> None:
        loss_fn(student, teacher, mask).backward()
        student.grad = None
    return step


def float64_errors(loss_fn: Callable, student: torch.Tensor, teacher: torch.Tensor,
                   mask: torch.Tensor) -> dict[str, float]:
    """Relative loss error and largest gradient error against float64 F.cross_entropy on the same inputs."""
    leaf = student.detach().clone().requires_grad_()
    loss = loss_fn(leaf, teacher, mask)
    loss.backward()
    s64 = student.detach().double().requires_grad_()
    target = teacher.double().masked_fill(mask, float("-inf")).softmax(dim=1)
    expected = F.cross_entropy(s64, target)
    expected.backward()
    return {"loss_rel_err": float((loss.detach().double() - expected.detach()).abs() / expected.detach().abs()),
            "grad_max_err": float((leaf.grad.double() - s64.grad).abs().max())}


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each step, run in turn within every round (the order rotates), after one warm-up each:
    on a shared machine, interleaving exposes every implementation to the same load."""
    names = list(steps)
    for name in names:
        steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, median, q3


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def cpu_peak_bytes(step: Callable[[], None]) -> int:
    """The most bytes live above the start over one step, from the profiler's allocation events (every
    allocation and free of PyTorch's CPU allocator, replayed in order)."""
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


def cuda_peak_bytes(step: Callable[[], None]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# Bytes each implementation moves per element of [B, K] (forward + backward), counted from the code (see
# bench/KERNELS.md); `s`, `t`, `g` are the student, teacher and gradient element sizes.
def essential_bytes(s: int, t: int) -> int:
    """Read the student, read the teacher, write the gradient in the student's dtype: the floor."""
    return s + t + s


def fused_bytes(s: int, t: int, classes: int, seed_grad_output: bool = True) -> int:
    """The fused kernel: one read of each input and one gradient write when a row fits a block (K <= 1024, or
    K <= 4096 with vector loads), two reads of each otherwise; a backward for grad_output != 1 re-reads both
    inputs and rewrites the gradient."""
    from fastforget_kernels import launch

    reads = 1 if launch.tiling(classes, (s, t)).single else 2
    forward = reads * (s + t) + s
    return forward if seed_grad_output else forward + (s + t) + s
