"""The training loop on a GPU: host syncs and kernel launches per step, RWFT-2-O wall time, training images/s
and the share of the bf16 peak at full width, and the fast recipe's accuracy for the epochs the budget affords.

    python bench/gpu_loop.py --out DIR [--budget-s 420] [--data DIR] [--dry-run]

Everything runs at full scale: ResNet-18 at width 64 on 32x32 CIFAR-10 images (the real ones when --data or
$FASTFORGET_DATA holds cifar10-jpeg.zip, else random uint8 images of the same shape, which time the same but
train to nothing). Models are freshly initialised: a step costs the same whatever the weights.

1. syncs: `torch.cuda.set_sync_debug_mode("warn")` over one and over two epochs of a run; the difference divided
   by the extra steps is the steady state (target 0). Also the launches per step (CUDA kernels in the profiler).
2. rwft-2-o: `run_method("rwft-2-o")` with SPEC's defaults (10 epochs over the 5,000 automobiles, batch 128,
   crop + flip, so the teacher runs every step), eager and with train.compile (the first compiled run, compile
   included, is reported apart from the second).
3. train: `fit` with the fast recipe's step (configs/cifar10-resnet18-fast.toml: batch 512, bf16, channels-last),
   eager, compiled, and compiled with CUDA graphs (mode="reduce-overhead"): images/s, and achieved FLOP/s
   (counted by torch.utils.flop_counter on one step) as a share of the bf16 peak, both the datasheet's dense
   figure and a measured 8192^3 bf16 matmul.
4. accuracy: the fast recipe trained for as many epochs as the time left affords (one-cycle compressed to them),
   with its test accuracy and the time 35 epochs would take. Real CIFAR-10 only.
5. q*: the teacher's q* (fp32, cuDNN's default TF32 convolutions) against a float64 teacher on 1,024 images.

--dry-run (or no CUDA) walks the same code on the CPU with a width-8 ResNet on 16x16 random images, a few steps
and no compilation, to check the script; those numbers mean nothing. Results: DIR/gpu_loop.json and
DIR/gpu_loop.md, which name the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("FASTFORGET_PROGRESS", "0")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DENSE_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}
"""Datasheet dense bf16 tensor-core peaks (SXM parts; PCIe H100 is lower), TFLOP/s."""


class Setting:
    """Sizes for a real run or a dry run."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = torch.device("cpu" if dry else "cuda")
        self.width = 8 if dry else 64  # (width 4 channels-last crashes oneDNN's CPU conv backward in torch 2.14)
        self.image = 16 if dry else 32
        self.train_batch = 32 if dry else 512
        self.train_steps = 3 if dry else 40
        self.rwft_epochs = 1 if dry else 10
        self.amp = not dry  # bf16 on a CPU without bf16 instructions is emulated: the dry run stays fp32


def dataset(setting: Setting, data_root: str):
    """Real CIFAR-10 when present (not in a dry run), else random images of CIFAR-10's shape and class sizes."""
    from fastforget.data import ImageDataset, load_dataset
    from fastforget.errors import DataNotFoundError

    if not setting.dry:
        try:
            return load_dataset("cifar10", data_root or None), True
        except DataNotFoundError as err:
            print(f"  CIFAR-10 not found ({err}): timing on random images of its shape", flush=True)
    per_class_train, per_class_test = (20, 10) if setting.dry else (5000, 1000)
    generator = torch.Generator().manual_seed(0)

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (10 * per_class, 3, setting.image, setting.image), dtype=torch.uint8,
                               generator=generator)
        return images, torch.arange(10).repeat_interleave(per_class)

    (train_x, train_y), (test_x, test_y) = split(per_class_train), split(per_class_test)
    return ImageDataset("random-cifar10-shape", train_x, train_y, test_x, test_y, [f"c{i}" for i in range(10)],
                        (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), False


def fast_config(setting: Setting, extra: list[str] = ()):
    from fastforget.config import load_config

    return load_config("cifar10-resnet18-fast", [f"model.width={setting.width}",
                                                 f"train.amp={str(setting.amp).lower()}",
                                                 f"train.batch_size={setting.train_batch}",
                                                 f"train.device={setting.device}", "train.compile=false", *extra])


def synchronize(setting: Setting) -> None:
    if setting.device.type == "cuda":
        torch.cuda.synchronize()


def _model(setting: Setting, data):
    from fastforget.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", data.num_classes, data.in_channels, width=setting.width)
    return model.to(setting.device, memory_format=torch.channels_last)


def _cross_entropy(net, batch, _progress):
    logits = net(batch.images)
    return F.cross_entropy(logits, batch.labels), logits


def train_steps(setting: Setting, data, *, steps: int, compile: bool, mode: str | None = None,
                model=None) -> tuple[float, int]:
    """`steps` fit() steps of the fast recipe (batch 512, crop + flip); returns (seconds, images)."""
    import fastforget.train as train
    from fastforget.data import make_train_loader

    cfg = fast_config(setting)
    model = model or _model(setting, data)
    loader = make_train_loader(data, cfg, indices=torch.arange(steps * setting.train_batch),
                               batch_size=setting.train_batch, device=setting.device, seed=0)
    sgd = train.SGDSpec.from_recipe(cfg.train)
    previous = train.COMPILE_MODE
    train.COMPILE_MODE = mode
    try:
        synchronize(setting)
        start = time.perf_counter()
        stats = train.fit(model, loader, _cross_entropy, epochs=1, sgd=sgd,
                          execution=train.ExecSpec(amp=setting.amp, compile=compile), desc="gpu-loop")
        synchronize(setting)
    finally:
        train.COMPILE_MODE = previous
    return time.perf_counter() - start, stats.images


def rwft_context(setting: Setting, data, compile: bool):
    from fastforget.unlearn import UnlearnContext

    cfg = fast_config(setting, [f"train.compile={str(compile).lower()}"])
    return UnlearnContext(original=_model(setting, data).eval(), meta={"label_smoothing": 0.0}, dataset=data,
                          forget=[1], cfg=cfg, device=setting.device)


def rwft(setting: Setting, ctx, epochs: int) -> float:
    from fastforget.unlearn import run_method

    return run_method("rwft-2-o", ctx, {"epochs": epochs}).wall_seconds


def _per_step(count: Callable[[int], tuple[float, int]]) -> float:
    """(count over two epochs - count over one) / extra steps: the steady state, set-up work cancelled."""
    one, steps_one = count(1)
    two, steps_two = count(2)
    return (two - one) / max(1, steps_two - steps_one)


def syncs_and_launches(setting: Setting, data) -> dict:
    """Host syncs and kernel launches per steady-state step of fit and of RWFT-2-O."""
    from torch.profiler import ProfilerActivity, profile

    results = {}

    def fit_run(epochs: int) -> int:
        return train_steps(setting, data, steps=2 * epochs, compile=False)[1] // setting.train_batch

    ctx = rwft_context(setting, data, compile=False)
    rwft_steps = -(-len(ctx.splits.train_f) // 128)

    def rwft_run(epochs: int) -> int:
        rwft(setting, ctx, epochs)
        return epochs * rwft_steps

    for name, run in (("fit", fit_run), ("rwft-2-o", rwft_run)):
        run(1)  # warm-up: cuDNN autotuning, one-time allocations

        def syncs(epochs: int, run: Callable[[int], int] = run) -> tuple[float, int]:
            if setting.device.type != "cuda":
                return 0.0, run(epochs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    steps = run(epochs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            return float(sum("synchroniz" in str(w.message) for w in caught)), steps

        def launches(epochs: int, run: Callable[[int], int] = run) -> tuple[float, int]:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setting.device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                steps = run(epochs)
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            return float(len(kernels)), steps

        results[name] = {"host_syncs_per_step": _per_step(syncs), "kernel_launches_per_step": _per_step(launches)}
        print(f"  {name}: {results[name]}", flush=True)
    return results


def rwft_wall_times(setting: Setting, data, deadline: float) -> dict:
    results = {}
    for compile in (False, True):
        if setting.dry and compile:
            continue
        if time.monotonic() > deadline:
            print("  budget spent: skipped compiled RWFT-2-O", flush=True)
            continue
        ctx = rwft_context(setting, data, compile)
        first = rwft(setting, ctx, setting.rwft_epochs)
        second = rwft(setting, ctx, setting.rwft_epochs)
        steps = setting.rwft_epochs * -(-len(ctx.splits.train_f) // 128)
        key = "compiled" if compile else "eager"
        results[key] = {"first_run_s": first, "second_run_s": second, "steps": steps,
                        "steps_per_s": steps / second}
        print(f"  rwft-2-o {key}: {results[key]}", flush=True)
    return results


def step_flops(setting: Setting, data) -> float:
    """FLOPs of one training step (forward + backward) of the fast recipe's model and batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from fastforget.runtime import autocast

    model = _model(setting, data).train()
    x = torch.randn(setting.train_batch, 3, setting.image, setting.image, device=setting.device)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (setting.train_batch,), device=setting.device)
    with FlopCounterMode(display=False) as counter:
        with autocast(setting.device, setting.amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
    return float(counter.get_total_flops())


def matmul_tflops(setting: Setting) -> float:
    n = 512 if setting.dry else 8192
    dtype = torch.float32 if setting.dry else torch.bfloat16
    a = torch.randn(n, n, device=setting.device, dtype=dtype)
    b = torch.randn(n, n, device=setting.device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(setting)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        synchronize(setting)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e12


def throughput(setting: Setting, data, deadline: float, peak: float | None, measured_peak: float) -> dict:
    flops = step_flops(setting, data)
    results = {"flops_per_image": flops / setting.train_batch}
    modes = [("eager", False, None)] + ([] if setting.dry else [("compiled", True, None),
                                                                ("compiled+cuda-graphs", True, "reduce-overhead")])
    for name, compile, mode in modes:
        if time.monotonic() > deadline:
            print(f"  budget spent: skipped {name}", flush=True)
            continue
        model = _model(setting, data)
        start = time.perf_counter()
        train_steps(setting, data, steps=3, compile=compile, mode=mode, model=model)  # compile, autotune
        warm_up = time.perf_counter() - start
        seconds, images = train_steps(setting, data, steps=setting.train_steps, compile=compile, mode=mode,
                                      model=model)
        achieved = images / seconds * results["flops_per_image"] / 1e12
        results[name] = {"images_per_s": images / seconds, "warm_up_s": warm_up, "achieved_tflops": achieved,
                         "share_of_datasheet_bf16_peak": achieved / peak if peak else None,
                         "share_of_measured_matmul": achieved / measured_peak}
        print(f"  train {name}: {results[name]}", flush=True)
    return results


def fast_recipe_accuracy(setting: Setting, data, real: bool, deadline: float, images_per_s: float | None) -> dict:
    if not (real or setting.dry):
        return {"skipped": "real CIFAR-10 not available: accuracy needs the real data"}
    from fastforget.train import train_model

    cfg = fast_config(setting, [f"train.compile={str(not setting.dry).lower()}"])
    epoch_s = len(data.train_labels) / images_per_s if images_per_s else 60.0
    left = deadline - time.monotonic() - 30 - 0.2 * len(data.test_labels) / max(images_per_s or 1, 1)
    epochs = 1 if setting.dry else min(cfg.train.epochs, int(left // (1.15 * epoch_s)))
    if epochs < 1:
        return {"skipped": f"budget spent (an epoch takes about {epoch_s:.0f} s)"}
    trained = train_model(cfg, dataset=data, epochs=epochs, desc="fast-recipe")
    result = {"epochs": epochs, "of_recipe_epochs": cfg.train.epochs, "test_accuracy": trained.meta["test_accuracy"],
              "train_seconds": trained.meta["train_seconds"],
              "full_recipe_seconds_extrapolated": trained.meta["train_seconds"] * cfg.train.epochs / epochs,
              "real_data": real}
    print(f"  fast recipe: {result}", flush=True)
    return result


def q_star_error(setting: Setting, data) -> dict:
    import fastforget_kernels as kernels
    from fastforget.data import InMemoryLoader
    from fastforget.unlearn.reweight import Teacher

    original = _model(setting, data).eval()
    images = next(iter(InMemoryLoader(data.train_images[:1024], data.train_labels[:1024], batch_size=1024,
                                      shuffle=False, mean=data.mean, std=data.std, device=setting.device)))[0]
    with torch.no_grad():
        with torch.autocast(setting.device.type, dtype=torch.bfloat16, enabled=setting.amp):
            _, logits = Teacher(original, device=setting.device)(images)
        exact = original.double()(images.double())
    errors = {}
    for reassign in ("proportional", "max-class"):
        q = kernels.reweighted_target(logits, [1], reassign).double()
        errors[reassign] = float((q - kernels.reweighted_target(exact, [1], reassign)).abs().max())
    print(f"  q* max abs error vs float64: {errors}", flush=True)
    return {"max_abs_error": errors, "within_1e-3": all(e <= 1e-3 for e in errors.values())}


def device_name(setting: Setting) -> str:
    if setting.device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}), dry run"


def markdown(report: dict) -> str:
    lines = [f"Device: {report['device']}; torch {report['torch']}; data: {report['data']}; "
             f"{'DRY RUN (numbers mean nothing)' if report['dry_run'] else 'full scale'}", ""]
    lines += ["| loop | host syncs / step | kernel launches / step |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['host_syncs_per_step']:.2f} | {v['kernel_launches_per_step']:.1f} |"
              for k, v in report.get("syncs", {}).items()]
    lines += ["", "| RWFT-2-O | first run s | second run s | steps | steps/s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['first_run_s']:.2f} | {v['second_run_s']:.2f} | {v['steps']} | {v['steps_per_s']:.1f} |"
              for k, v in report.get("rwft_2_o", {}).items()]
    train = report.get("train", {})
    lines += ["", f"Training step: {train.get('flops_per_image', 0) / 1e9:.2f} GFLOP per image (forward + backward); "
              f"datasheet bf16 peak {report.get('datasheet_bf16_tflops')} TFLOP/s, measured bf16 matmul "
              f"{report.get('measured_matmul_tflops', 0):.0f} TFLOP/s.", "",
              "| fit | images/s | warm-up s | TFLOP/s | share of datasheet peak | share of measured matmul |",
              "|---|---:|---:|---:|---:|---:|"]
    for key, value in train.items():
        if isinstance(value, dict):
            share = value["share_of_datasheet_bf16_peak"]
            lines.append(f"| {key} | {value['images_per_s']:,.0f} | {value['warm_up_s']:.1f} | "
                         f"{value['achieved_tflops']:.1f} | {'n/a' if share is None else f'{share:.1%}'} | "
                         f"{value['share_of_measured_matmul']:.1%} |")
    lines += ["", f"Fast recipe (configs/cifar10-resnet18-fast.toml): {json.dumps(report.get('fast_recipe'))}",
              "", f"q* (teacher under autocast) vs float64: {json.dumps(report.get('q_star'))}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new measurements after this")
    parser.add_argument("--data", default=os.environ.get("FASTFORGET_DATA", ""))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    setting = Setting(args.dry_run or not torch.cuda.is_available())
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if setting.dry:
        torch.set_num_threads(1)
    data, real = dataset(setting, args.data)
    name = device_name(setting)
    peak = next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)
    print(f"== device {name}; data {data.name}", flush=True)
    report: dict = {"device": name, "torch": torch.__version__, "dry_run": setting.dry, "data": data.name,
                    "datasheet_bf16_tflops": peak}

    def save() -> None:
        (out / "gpu_loop.json").write_text(json.dumps(report, indent=2))
        (out / "gpu_loop.md").write_text(markdown(report))

    print("== 1. host syncs and kernel launches per step", flush=True)
    report["syncs"] = syncs_and_launches(setting, data)
    save()
    print("== 2. RWFT-2-O wall time", flush=True)
    report["rwft_2_o"] = rwft_wall_times(setting, data, deadline)
    save()
    print("== 3. training throughput", flush=True)
    report["measured_matmul_tflops"] = matmul_tflops(setting)
    report["train"] = throughput(setting, data, deadline, peak, report["measured_matmul_tflops"])
    save()
    print("== 4. fast recipe accuracy", flush=True)
    best = max((v["images_per_s"] for v in report["train"].values() if isinstance(v, dict)), default=None)
    report["fast_recipe"] = fast_recipe_accuracy(setting, data, real, deadline, best)
    save()
    print("== 5. q* precision", flush=True)
    report["q_star"] = q_star_error(setting, data)
    save()
    print(markdown(report))


if __name__ == "__main__":
    main()
