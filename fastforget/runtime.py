"""Devices, seeds, mixed precision, timing and memory: the facts every result file records."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastforget import __version__
from fastforget.errors import ConfigError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (CUDA where present, else CPU) or a device torch knows and this machine has."""
    if device in (None, "", "auto"):
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"train.device = {device!r} is not a device ({err}); use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"train.device = {device!r} but this machine has no usable CUDA GPU (torch "
                              f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); use "
                              "--set train.device=auto or cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"train.device = {device!r} but this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1}); use one of them or auto")
    elif resolved.type not in ("cpu", "mps") or (resolved.type == "mps" and not torch.backends.mps.is_available()):
        raise ConfigError(f"train.device = {device!r} is not available here; use auto, cpu or cuda")
    return resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device does it well (CPU, Ampere+), else fp16 (which then needs a grad scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    with torch.autocast(device.type, dtype=amp_dtype(device), enabled=enabled):
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress_enabled() -> bool:
    """Progress bars: FASTFORGET_PROGRESS=1 on, 0 off; unset, only where stderr is a terminal (a log file or a CI
    job gets no escape codes)."""
    setting = os.environ.get("FASTFORGET_PROGRESS", "")
    if setting:
        return setting != "0"
    return sys.stderr is not None and sys.stderr.isatty()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measurement:
    wall_seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = ""


@contextmanager
def measure(device: torch.device) -> Iterator[Measurement]:
    """Wall time (device synchronised) and peak memory of the block.

    On CUDA: peak allocated bytes. On CPU: peak resident-set growth over the block, sampled every 5 ms, since
    PyTorch's CPU allocator keeps no statistics.
    """
    result = Measurement()
    synchronize(device)
    stop = threading.Event()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result.memory_kind = "cuda peak allocated above start"
    else:
        base = peak = _rss_bytes()
        result.memory_kind = "cpu peak RSS growth (sampled)"

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.005):
                peak = max(peak, _rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        synchronize(device)
        result.wall_seconds = time.perf_counter() - start
        if device.type == "cuda":
            result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device) - base)
        else:
            stop.set()
            sampler.join()
            result.peak_memory_bytes = int(max(peak, _rss_bytes()) - base)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def determinism() -> dict:
    """What decides whether a rerun gives the same bits: CPU kernels split their reductions by thread count, so
    the same seed with another `torch_threads` gives (slightly) different weights; on CUDA, only
    deterministic algorithms make reruns bit-identical."""
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def environment(device: torch.device | None = None) -> dict:
    """Versions and hardware, recorded in every sidecar and result file."""
    device = device or default_device()
    info = {
        "fastforget": __version__,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        **determinism(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
