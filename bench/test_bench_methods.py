"""Wall time and peak memory of every registered unlearning method on one setting, side by side (the paper's
Figure 2), with each method's speed-up over retraining from scratch measured in the same run.

    pytest bench/test_bench_methods.py --benchmark-only [--benchmark-json=out.json]

The setting comes from the environment (defaults: the digits config, which runs in minutes on a CPU):
  FASTFORGET_BENCH_CONFIG     config name or TOML file (e.g. cifar10-resnet18-small)
  FASTFORGET_BENCH_FORGET     forget classes, comma-separated names or indices (e.g. automobile); default: the
                              first forget set of the config's [bench] table, else the first class
  FASTFORGET_BENCH_OVERRIDES  config overrides, space-separated (e.g. "train.epochs=2 model.width=8")
  FASTFORGET_BENCH_ORIGINAL   checkpoint of an original trained with that config, to reuse; default: the
                              original is trained once per run into a temporary folder
  FASTFORGET_BENCH_ROUNDS     timed runs per method (default 3; the table shows the median)

Times and memory are `run_method`'s own: wall seconds with the device synchronised, and peak memory above the
start (CUDA: peak allocated bytes; CPU: peak resident-set growth sampled every 5 ms, of which the largest over
the rounds is shown). One-time costs stay out of the timed rounds: `run_method` pays the process's (the
optimiser's import of torch._dynamo) before its timer, and each method first runs once untimed, whose time is
shown apart ("first run s": the per-shape costs, such as oneDNN or cuDNN kernel selection and, with
train.compile=true, compilation).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fastforget.checkpoint import load_checkpoint
from fastforget.config import Config, load_config
from fastforget.data import ImageDataset, resolve_classes
from fastforget.errors import ConfigError
from fastforget.runtime import resolve_device
from fastforget.train import train_model
from fastforget.unlearn import METHODS, UnlearnContext, run_method

CONFIG = os.environ.get("FASTFORGET_BENCH_CONFIG", "digits")
FORGET = os.environ.get("FASTFORGET_BENCH_FORGET", "")
OVERRIDES = os.environ.get("FASTFORGET_BENCH_OVERRIDES", "").split()
ORIGINAL = os.environ.get("FASTFORGET_BENCH_ORIGINAL", "")
ROUNDS = int(os.environ.get("FASTFORGET_BENCH_ROUNDS", "3"))
BASELINE = "retrain"
ORDER = [BASELINE, *sorted(name for name in METHODS if name != BASELINE)]  # the baseline first: ratios need it
MIB = 2**20


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(CONFIG, OVERRIDES)


@pytest.fixture(scope="module")
def dataset(cfg: Config, load_or_skip: Callable[[str], ImageDataset]) -> ImageDataset:
    return load_or_skip(cfg.data["name"])


def forget_classes(cfg: Config, dataset: ImageDataset) -> list[int]:
    """$FASTFORGET_BENCH_FORGET, else the config's first [bench] forget set, else the first class."""
    if FORGET:
        return resolve_classes([name.strip() for name in FORGET.split(",")], dataset.classes)
    planned = cfg.raw.get("bench", {}).get("forget", "all")
    if isinstance(planned, list) and planned:
        first = planned[0]
        return resolve_classes(first if isinstance(first, list) else [first], dataset.classes)
    return [0]


@pytest.fixture(scope="module")
def ctx(cfg: Config, dataset: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> UnlearnContext:
    """The setting every method runs on: the original (trained once here, or reused) and the forget classes."""
    if ORIGINAL:
        model, meta = load_checkpoint(ORIGINAL)
        if meta.get("dataset") != dataset.name or meta.get("arch") != cfg.model["arch"]:
            raise ConfigError(f"{ORIGINAL} holds a {meta.get('arch')} on {meta.get('dataset')}, but "
                              f"FASTFORGET_BENCH_CONFIG={CONFIG} trains a {cfg.model['arch']} on {dataset.name}: "
                              "give a checkpoint trained with that config, or unset FASTFORGET_BENCH_ORIGINAL")
    else:
        trained = train_model(cfg, dataset=dataset, out_dir=tmp_path_factory.mktemp("original"), desc="original")
        model, meta = trained.model, trained.meta
    return UnlearnContext(original=model, meta=meta, dataset=dataset, forget=forget_classes(cfg, dataset), cfg=cfg,
                          device=resolve_device(cfg.train.device))


@pytest.mark.parametrize("method", ORDER)
def test_method_time_and_memory(method: str, ctx: UnlearnContext, benchmark: Any,
                                bench_tables: dict[str, list[dict[str, object]]]) -> None:
    first = run_method(method, ctx).wall_seconds
    runs: list[tuple[float, int, str]] = []

    def unlearn() -> None:
        result = run_method(method, ctx)
        runs.append((result.wall_seconds, result.peak_memory_bytes, result.memory_kind))

    benchmark.pedantic(unlearn, rounds=ROUNDS, iterations=1)
    seconds = statistics.median(wall for wall, _, _ in runs)
    peak_mib = max(peak for _, peak, _ in runs) / MIB
    setting = f"{Path(CONFIG).stem} {' '.join(OVERRIDES)}".strip()
    forget = ",".join(ctx.dataset.classes[c] for c in ctx.forget)
    table = f"Methods on {setting}, forget {forget}, {ctx.device}: wall time, peak memory, speed-up over {BASELINE}"
    baseline = [row for row in bench_tables.get(table, []) if row["method"] == BASELINE]
    speedup = baseline[0]["median s"] / seconds if baseline else None
    benchmark.extra_info.update(method=method, setting=setting, forget=forget, device=str(ctx.device),
                                wall_seconds=[wall for wall, _, _ in runs], median_wall_seconds=seconds,
                                first_run_seconds=first,
                                peak_memory_bytes=[peak for _, peak, _ in runs], memory_kind=runs[0][2],
                                speedup_vs_retrain=speedup, torch_threads=torch.get_num_threads())
    bench_tables.setdefault(table, []).append({"method": method, "median s": seconds, "peak MiB": peak_mib,
                                               f"x {BASELINE}": speedup, "first run s": first})
