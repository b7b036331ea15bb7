"""GPU timings of the reweighted cross-entropy and TV distance against the memory-bandwidth floor.

    python bench/gpu_check.py [--out DIR] [--budget-s 200] [--dry-run]

For every (B, K, dtype): check the fused kernel against the PyTorch reference, then time forward+backward of the
naive eager composition, the reference under torch.compile and the fused Triton kernel (median of
triton.testing.do_bench, which flushes L2 between runs), and a device-to-device copy that moves the same
essential bytes (read student and teacher, write the gradient: 3 B K itemsize). Achieved GB/s counts those
essential bytes, so the fraction of copy bandwidth is how close each implementation is to the floor.

Without CUDA (or with --dry-run) it walks the same code on CPU with tiny shapes, no compile and the fused kernel
in Triton's interpreter, to check the script itself; those numbers mean nothing.
Results go to DIR/gpu_results.json and DIR/gpu_results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

DRY = "--dry-run" in sys.argv or not torch.cuda.is_available()
if DRY:  # the fused kernel then runs in Triton's interpreter, which must be chosen before Triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `kernels`, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bench_kernels import IMPLEMENTATIONS, make_inputs, peak_bytes, training_step  # noqa: E402

import kernels  # noqa: E402

GPU_SHAPES = [(8192, 10), (8192, 100), (8192, 1000), (512, 32000), (65536, 1000), (4096, 32000),
              (1048576, 10), (256, 256000)]
DRY_SHAPES = [(64, 10), (16, 1000)]
GPU_IMPLS = ["naive-eager", "reference-compiled", "fused-triton"]
DRY_IMPLS = ["naive-eager", "reference-eager", "fused-triton"]
TV_SHAPES = [((8, 8192, 1000), (8192, 1000)), ((4096, 32000), (4096, 32000))]
DRY_TV_SHAPES = [((2, 16, 100), (16, 100))]


def median_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def copy_ms(nbytes: int, device: torch.device) -> float:
    """The floor: a device-to-device copy moving `nbytes` (half read, half written)."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return median_ms(lambda: dst.copy_(src), device)


def check_fused(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Loss and gradient of the fused kernel against the float32 reference on the same inputs."""
    results = {}
    for backend in ("triton", "reference"):
        leaf = student.detach().clone().requires_grad_()
        loss = kernels.dispatch.reweighted_cross_entropy_with_mask(leaf, teacher, mask, "max-class", "mean",
                                                                   backend=backend)
        loss.backward()
        results[backend] = (loss.detach().float(), leaf.grad.float())
    (loss, grad), (ref_loss, ref_grad) = results["triton"], results["reference"]
    return {"loss_rel_err": float((loss - ref_loss).abs() / ref_loss.abs()),
            "grad_err_vs_max": float((grad - ref_grad).abs().max() / ref_grad.abs().max())}


def cross_entropy_sweep(device: torch.device, shapes: list, impls: list, dtypes: list, deadline: float) -> list:
    rows = []
    for dtype in dtypes:
        for batch, classes in shapes:
            if time.monotonic() > deadline:
                print(f"  budget spent: skipped B={batch} K={classes} {dtype}")
                continue
            student, teacher, mask = make_inputs(batch, classes, dtype, device)
            essential = 3 * student.numel() * student.element_size()
            floor = copy_ms(essential, device)
            check = check_fused(student, teacher, mask) if "fused-triton" in impls else {}
            for impl in impls:
                if impl == "reference-compiled" and time.monotonic() > deadline:
                    continue
                if impl == "reference-compiled":
                    torch._dynamo.reset()
                step = training_step(IMPLEMENTATIONS[impl], student, teacher, mask)
                step()
                ms = median_ms(step, device)
                row = {"op": "reweighted_ce", "B": batch, "K": classes, "dtype": str(dtype).removeprefix("torch."),
                       "impl": impl, "ms": ms, "copy_floor_ms": floor, "GBps": essential / ms / 1e6,
                       "fraction_of_copy": floor / ms, "peak_MiB": peak_bytes(step, device) / 2**20}
                if impl == "fused-triton":
                    row.update(check)
                rows.append(row)
                print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in row.items()), flush=True)
    return rows


def tv_sweep(device: torch.device, shapes: list, deadline: float) -> list:
    rows = []
    for shape_a, shape_b in shapes:
        if time.monotonic() > deadline:
            print(f"  budget spent: skipped TV {shape_a} vs {shape_b}")
            continue
        a, b = torch.randn(shape_a, device=device), torch.randn(shape_b, device=device)
        essential = a.nbytes + b.nbytes
        floor = copy_ms(essential, device)
        expected = kernels.tv_distance(a, b, backend="reference")
        for backend in ("reference", "triton"):
            ms = median_ms(lambda a=a, b=b, backend=backend: kernels.tv_distance(a, b, backend=backend), device)
            err = float((kernels.tv_distance(a, b, backend=backend) - expected).abs().max())
            row = {"op": "tv_distance", "shape": f"{list(shape_a)} vs {list(shape_b)}", "impl": backend, "ms": ms,
                   "copy_floor_ms": floor, "GBps": essential / ms / 1e6, "fraction_of_copy": floor / ms,
                   "max_abs_err": err}
            rows.append(row)
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)
    return rows


def markdown(rows: list, device_name: str) -> str:
    lines = [f"Device: {device_name}", "",
             "| op | shape | dtype | impl | median ms | copy floor ms | GB/s | fraction of copy | peak MiB | check |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        shape = row.get("shape") or f"B={row['B']} K={row['K']}"
        check = ", ".join(f"{k}={row[k]:.1e}" for k in ("loss_rel_err", "grad_err_vs_max", "max_abs_err")
                          if k in row)
        peak = f"{row['peak_MiB']:.1f}" if "peak_MiB" in row else "-"
        lines.append(f"| {row['op']} | {shape} | {row.get('dtype', 'float32')} | {row['impl']} | {row['ms']:.3f} "
                     f"| {row['copy_floor_ms']:.3f} | {row['GBps']:.0f} | {row['fraction_of_copy']:.2f} | {peak} "
                     f"| {check} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_results.json and .md")
    parser.add_argument("--budget-s", type=float, default=200.0, help="stop starting new cases after this")
    parser.add_argument("--dry-run", action="store_true", help="CPU walk-through of the script, no timings")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    dry = DRY
    if dry:
        print("DRY RUN: no CUDA device (or --dry-run): tiny CPU shapes, no compile, the fused kernel interpreted; "
              "the numbers below only show that the script works")
        device, device_name = torch.device("cpu"), "CPU (dry run)"
    else:
        device, device_name = torch.device("cuda"), torch.cuda.get_device_name()
        big = 2**30
        print(f"{device_name}: device-to-device copy {2 * big / copy_ms(2 * big, device) / 1e6:.0f} GB/s "
              f"(bytes read + written), torch {torch.__version__}")

    print("reweighted cross-entropy, forward+backward:")
    rows = cross_entropy_sweep(device, DRY_SHAPES if dry else GPU_SHAPES, DRY_IMPLS if dry else GPU_IMPLS,
                               [torch.float32] if dry else [torch.float32, torch.bfloat16], deadline)
    print("TV distance:")
    rows += tv_sweep(device, DRY_TV_SHAPES if dry else TV_SHAPES, deadline=deadline + 30)
    table = markdown(rows, device_name)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_results.json").write_text(json.dumps({"device": device_name, "rows": rows}, indent=1))
        (args.out / "gpu_results.md").write_text(table + "\n")
    failures = [r for r in rows if r.get("loss_rel_err", 0) > 1e-4 or r.get("grad_err_vs_max", 0) > 2e-2
                or r.get("max_abs_err", 0) > 1e-5]
    if failures:
        raise SystemExit(f"{len(failures)} case(s) disagree with the reference: {failures}")


if __name__ == "__main__":
    main()
