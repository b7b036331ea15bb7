"""Step 60: the training loop on the card. Host syncs and kernel launches per step, RWFT-2-O wall time, training
images/s and the share of the bf16 peak at full width (eager, compiled, compiled with CUDA graphs), the RWFT
teacher's q* against float64, and the fast recipe's test accuracy for the epochs the budget affords.

Everything runs at full scale: ResNet-18 at width 64 on 32x32 CIFAR-10 images, freshly initialised (a step costs
the same whatever the weights). Data: real CIFAR-10 where --data (or $FASTFORGET_DATA) holds cifar10-jpeg.zip,
else random uint8 images of its shape and class sizes, which time the same but train to nothing (no accuracy
then). The zip (62 MB) fits the device tool's 64 MiB carry: copy it into an ignored folder of the checkout, name
that folder in `carry`, and pass it as FASTFORGET_DATA.

In order of priority (a spent budget skips what is left, and the table says so):
1. host syncs per step: `torch.cuda.set_sync_debug_mode("warn")` over one and over two epochs; the difference
   divided by the extra steps is the steady state (target 0). Kernel launches per step likewise (profiler).
2. q*: the teacher's q* (fp32 outside autocast, cuDNN's default TF32 convolutions) against a float64 teacher.
3. RWFT-2-O: `run_method("rwft-2-o")` with SPEC's defaults (10 epochs over the 5,000 automobiles, batch 128,
   crop + flip, so the teacher runs every step), eager, then compiled (first run: compilation included).
4. training: `fit` with the fast recipe's step (batch 512, bf16, channels-last, crop + flip): images/s and the
   achieved model FLOP/s (torch.utils.flop_counter on one step) as a share of the datasheet's dense bf16 peak and
   of the bf16 matmul step 10 measured; eager, compiled, compiled with CUDA graphs (mode="reduce-overhead").
5. the fast recipe (configs/cifar10-resnet18-fast.toml) trained for as many of its 35 epochs as the time left
   affords (the one-cycle compressed to them): test accuracy, and the time the full recipe would take.

--dry-run (or no CUDA) walks the same code on the CPU with a width-8 ResNet on 16x16 random images, a few steps
and no compilation (tests/test_gpu_script.py); those numbers mean nothing.
"""
# budget: 240

from common import Step, recorded_device

step = Step(__doc__)

import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DRY = step.dry_run
DEVICE = step.device
WIDTH = 8 if DRY else 64  # (width 4 channels-last crashes oneDNN's CPU conv backward in torch 2.14)
IMAGE = 16 if DRY else 32
TRAIN_BATCH = 32 if DRY else 512
TRAIN_STEPS = 3 if DRY else 40
RWFT_EPOCHS = 1 if DRY else 10
RWFT_BATCH = 128
AMP = not DRY  # bf16 on a CPU without bf16 instructions is emulated: the dry run stays fp32
FORGET = 1  # automobile


def dataset():
    """(data, real): real CIFAR-10 when present (not in a dry run), else random images of CIFAR-10's shape."""
    from fastforget.data import ImageDataset, load_dataset
    from fastforget.errors import DataNotFoundError

    root = step.args.data or os.environ.get("FASTFORGET_DATA")
    if not DRY and root:
        try:
            return load_dataset("cifar10", str(root)), True
        except DataNotFoundError as err:
            step.note(f"CIFAR-10 not found under {root} ({err}): timing on random images of its shape")
    per_class_train, per_class_test = (20, 10) if DRY else (5000, 1000)
    generator = torch.Generator().manual_seed(0)

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (10 * per_class, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=generator)
        return images, torch.arange(10).repeat_interleave(per_class)

    (train_x, train_y), (test_x, test_y) = split(per_class_train), split(per_class_test)
    return ImageDataset("random-cifar10-shape", train_x, train_y, test_x, test_y, [f"c{i}" for i in range(10)],
                        (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), False


def fast_config(extra: tuple[str, ...] = ()):
    from fastforget.config import load_config

    return load_config("cifar10-resnet18-fast", [f"model.width={WIDTH}", f"train.amp={str(AMP).lower()}",
                                                 f"train.batch_size={TRAIN_BATCH}", f"train.device={DEVICE}",
                                                 "train.compile=false", *extra])


def synchronize() -> None:
    if step.cuda:
        torch.cuda.synchronize()


def new_model(data):
    from fastforget.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", data.num_classes, data.in_channels, width=WIDTH)
    return model.to(DEVICE, memory_format=torch.channels_last)


def cross_entropy(net, batch, _progress):
    logits = net(batch.images)
    return F.cross_entropy(logits, batch.labels), logits


def train_steps(data, *, steps: int, compile: bool, mode: str | None = None, model=None) -> tuple[float, int]:
    """`steps` fit() steps of the fast recipe (batch 512, crop + flip); returns (seconds, images)."""
    import fastforget.train as train
    from fastforget.data import make_train_loader

    cfg = fast_config()
    model = model or new_model(data)
    loader = make_train_loader(data, cfg, indices=torch.arange(steps * TRAIN_BATCH), batch_size=TRAIN_BATCH,
                               device=DEVICE, seed=0)
    previous, train.COMPILE_MODE = train.COMPILE_MODE, mode
    try:
        synchronize()
        start = time.perf_counter()
        stats = train.fit(model, loader, cross_entropy, epochs=1, sgd=train.SGDSpec.from_recipe(cfg.train),
                          execution=train.ExecSpec(amp=AMP, compile=compile), desc="gpu-loop")
        synchronize()
    finally:
        train.COMPILE_MODE = previous
    return time.perf_counter() - start, stats.images


def rwft_context(data, compile: bool):
    from fastforget.unlearn import UnlearnContext

    cfg = fast_config((f"train.compile={str(compile).lower()}",))
    return UnlearnContext(original=new_model(data).eval(), meta={"label_smoothing": 0.0}, dataset=data,
                          forget=[FORGET], cfg=cfg, device=DEVICE)


def rwft(ctx, epochs: int) -> float:
    from fastforget.unlearn import run_method

    return run_method("rwft-2-o", ctx, {"epochs": epochs, "batch_size": RWFT_BATCH}).wall_seconds


def per_step(count: Callable[[int], tuple[float, int]]) -> float:
    """(count over two epochs - count over one) / extra steps: the steady state, set-up work cancelled."""
    one, steps_one = count(1)
    two, steps_two = count(2)
    return (two - one) / max(1, steps_two - steps_one)


def syncs_and_launches(data) -> None:
    from torch.profiler import ProfilerActivity, profile

    def fit_run(epochs: int) -> int:
        return train_steps(data, steps=2 * epochs, compile=False)[1] // TRAIN_BATCH

    ctx = rwft_context(data, compile=False)
    rwft_steps = -(-len(ctx.splits.train_f) // RWFT_BATCH)

    def rwft_run(epochs: int) -> int:
        rwft(ctx, epochs)
        return epochs * rwft_steps

    for name, run in (("fit (fast recipe step)", fit_run), ("RWFT-2-O", rwft_run)):
        run(1)  # warm-up: cuDNN autotuning, one-time allocations

        def syncs(epochs: int, run: Callable[[int], int] = run) -> tuple[float, int]:
            if not step.cuda:
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
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if step.cuda else [])
            with profile(activities=activities) as prof:
                steps = run(epochs)
            device_kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            return float(len(device_kernels)), steps

        step.record("Host syncs and kernel launches per steady-state step (target: 0 syncs)",
                    {"loop": name, "host syncs / step": per_step(syncs),
                     "kernel launches / step": per_step(launches) if step.cuda else None})


def q_star_error(data) -> None:
    from fastforget import kernels
    from fastforget.data import InMemoryLoader
    from fastforget.unlearn.reweight import Teacher

    original = new_model(data).eval()
    images = next(iter(InMemoryLoader(data.train_images[:1024], data.train_labels[:1024], batch_size=1024,
                                      shuffle=False, mean=data.mean, std=data.std, device=DEVICE)))[0]
    with torch.no_grad():
        _, logits = Teacher(original, device=DEVICE)(images)
        exact = original.double()(images.double())
    row = {}
    for reassign in ("proportional", "max-class"):
        q = kernels.reweighted_target(logits, [FORGET], reassign).double()
        row[f"max |q* - q*_fp64|, {reassign}"] = float((q - kernels.reweighted_target(exact, [FORGET], reassign))
                                                       .abs().max())
    step.record("RWFT teacher's q* against a float64 teacher (1,024 images; target <= 1e-3)", row)
    if max(row.values()) > 1e-3:
        step.fail(f"q* differs from the float64 teacher's by {max(row.values()):.2g} (> 1e-3)")


def rwft_wall_times(data) -> None:
    for compile in (False, True):
        if DRY and compile:
            continue
        if step.out_of_time(f"RWFT-2-O {'compiled' if compile else 'eager'}"):
            return
        ctx = rwft_context(data, compile)
        first = rwft(ctx, RWFT_EPOCHS)
        second = rwft(ctx, RWFT_EPOCHS)
        steps = RWFT_EPOCHS * -(-len(ctx.splits.train_f) // RWFT_BATCH)
        step.record(f"RWFT-2-O, forget automobile, {RWFT_EPOCHS} epochs of batch {RWFT_BATCH} (ResNet-18 width "
                    f"{WIDTH})", {"run": "compiled" if compile else "eager", "first run s": first,
                                  "second run s": second, "steps": steps, "steps/s": steps / second,
                                  "images/s": steps * RWFT_BATCH / second})


def step_flops(data) -> float:
    """FLOPs of one training step (forward + backward) of the fast recipe's model and batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from fastforget.runtime import autocast

    model = new_model(data).train()
    x = torch.randn(TRAIN_BATCH, 3, IMAGE, IMAGE, device=DEVICE).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (TRAIN_BATCH,), device=DEVICE)
    with FlopCounterMode(display=False) as counter:
        with autocast(DEVICE, AMP):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
    return float(counter.get_total_flops())


def matmul_tflops() -> float:
    """Step 10's measured bf16 matmul when it ran in this OUT, else measured here."""
    measured = recorded_device(step.args.out).get("bf16 matmul TFLOP/s (measured)")
    if measured:
        return measured
    n = 512 if DRY else 8192
    a = torch.randn(n, n, device=DEVICE, dtype=torch.float32 if DRY else torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        synchronize()
        start = time.perf_counter()
        a @ b
        synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e12


def throughput(data) -> float | None:
    """Training images/s and share of the peaks, eager / compiled / CUDA graphs; returns the best images/s."""
    peak = recorded_device(step.args.out).get("bf16 peak TFLOP/s (datasheet)")
    measured_peak = matmul_tflops()
    flops_per_image = step_flops(data) / TRAIN_BATCH
    best = None
    modes = [("eager", False, None)] + ([] if DRY else [("compiled", True, None),
                                                        ("compiled + CUDA graphs", True, "reduce-overhead")])
    for name, compile, mode in modes:
        if step.out_of_time(f"training throughput, {name}"):
            break
        model = new_model(data)
        start = time.perf_counter()
        train_steps(data, steps=3, compile=compile, mode=mode, model=model)  # compilation, autotuning
        warm_up = time.perf_counter() - start
        seconds, images = train_steps(data, steps=TRAIN_STEPS, compile=compile, mode=mode, model=model)
        achieved = images / seconds * flops_per_image / 1e12
        best = max(best or 0.0, images / seconds)
        step.record(f"Training, fast recipe's step (batch {TRAIN_BATCH}, bf16 {AMP}, channels-last, crop + flip; "
                    f"{flops_per_image / 1e9:.2f} GFLOP/image forward + backward)",
                    {"fit": name, "images/s": images / seconds, "warm-up s (3 steps)": warm_up,
                     "TFLOP/s": achieved, "share of datasheet bf16 peak": achieved / peak if peak else None,
                     "share of measured bf16 matmul": achieved / measured_peak})
    return best


def fast_recipe_accuracy(data, real: bool, images_per_s: float | None) -> None:
    table = "Fast recipe (configs/cifar10-resnet18-fast.toml; accuracy unverified until this runs on real data)"
    if not (real or DRY):
        step.note("fast recipe accuracy skipped: it needs real CIFAR-10 (see --data)")
        return
    from fastforget.train import train_model

    cfg = fast_config((f"train.compile={str(not DRY).lower()}",))
    epoch_s = len(data.train_labels) / images_per_s if images_per_s else 60.0
    left = step.left_s() - 15 - 0.2 * epoch_s  # the test-set evaluation and the compile's reuse margin
    epochs = 1 if DRY else min(cfg.train.epochs, int(left // (1.15 * epoch_s)))
    if epochs < 1:
        step.note(f"fast recipe accuracy skipped: budget spent (an epoch takes about {epoch_s:.0f} s)")
        return
    trained = train_model(cfg, dataset=data, epochs=epochs, desc="fast-recipe")
    step.record(table, {"epochs": epochs, "of the recipe's": cfg.train.epochs,
                        "test accuracy %": trained.meta["test_accuracy"],
                        "train s": trained.meta["train_seconds"],
                        "full recipe s (extrapolated)": trained.meta["train_seconds"] * cfg.train.epochs / epochs,
                        "data": data.name})


def main() -> None:
    data, real = dataset()
    step.note(f"data: {data.name}{' (real)' if real else ''}; ResNet-18 width {WIDTH}, {IMAGE}x{IMAGE} images")
    syncs_and_launches(data)
    q_star_error(data)
    rwft_wall_times(data)
    best = throughput(data)
    if not step.out_of_time("fast recipe accuracy"):
        fast_recipe_accuracy(data, real, best)


sys.exit(step.run_api(main))
