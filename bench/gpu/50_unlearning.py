"""Step 50: what a user runs, timed: one training epoch of the CIFAR-10 ResNet-18 at full width (64) and the
RWFT-2-O unlearning of the automobile class (10 epochs over its 5,000 training images), through the public API
(`fastforget.train.train_model`, `fastforget.unlearn.run_method`) with the config's recipe (bf16 autocast,
channels-last). Reported: images/s and the share of the card's dense bf16 peak reached, with the model FLOPs per
image counted by torch.utils.flop_counter on one batch (training: forward + backward; RWFT-2-O: the teacher's
forward, the student's forward and the backward through layer3 + fc only).

Data: real CIFAR-10 where --data (or $FASTFORGET_DATA) holds it, else synthetic CIFAR-shaped uint8 images (the
data set does not travel to the GPU machine; timings do not depend on pixel values); the table says which.
The trained epoch is the original the unlearning starts from (its accuracy is irrelevant to the timing).
"""
# budget: 90

from common import Step, recorded_device, synthetic_cifar

step = Step(__doc__)

import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

FORGET = "automobile"
TABLE = "CIFAR-10 ResNet-18 (width 64): training and RWFT-2-O unlearning"


def load_data():
    from fastforget.data import load_dataset
    from fastforget.errors import DataNotFoundError

    root = step.args.data or os.environ.get("FASTFORGET_DATA")
    if root and not step.dry_run:
        try:
            return load_dataset("cifar10", root), f"real CIFAR-10 from {root}"
        except DataNotFoundError as error:
            step.note(f"no CIFAR-10 under {root} ({error}); using synthetic data")
    train, test = (50_000, 10_000) if not step.dry_run else (64, 32)
    return synthetic_cifar(train, test), f"synthetic CIFAR-shaped uint8 ({train} train, {test} test images)"


def flops_per_image(model: torch.nn.Module, images: torch.Tensor, trainable: list | None,
                    teacher: torch.nn.Module | None = None) -> float:
    """Model FLOPs of one step on `images`, per image; `trainable` None: every parameter gets a gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = [p.requires_grad for p in model.parameters()]
    if trainable is not None:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
    with FlopCounterMode(display=False) as counter, torch.autocast(images.device.type, dtype=torch.bfloat16):
        if teacher is not None:
            with torch.no_grad():
                teacher(images)
        model(images).float().logsumexp(dim=1).sum().backward()
    for p, flag in zip(model.parameters(), saved, strict=True):
        p.requires_grad_(flag)
        p.grad = None
    return counter.get_total_flops() / len(images)


def main() -> None:
    from fastforget.config import load_config
    from fastforget.data import resolve_classes
    from fastforget.train import train_model
    from fastforget.unlearn import UnlearnContext, run_method

    overrides = [f"train.device={step.device}", "train.epochs=1"]
    if step.dry_run:
        # width 8: at width 4, channels-last convolution backward corrupts memory in oneDNN (torch 2.14, AVX2 CPU)
        overrides += ["model.width=8", "train.batch_size=32", "train.amp=false"]
    cfg = load_config("cifar10-resnet18", overrides)
    dataset, data_kind = load_data()
    step.note(f"data: {data_kind}")
    peak = recorded_device(step.args.out).get("bf16 peak TFLOP/s (datasheet)")
    trained = train_model(cfg, dataset=dataset, epochs=1, desc="train 1 epoch")
    images = dataset.train_images[:cfg.train.batch_size].to(step.device).float().div_(255)
    images = images.to(memory_format=torch.channels_last)
    model = trained.model.to(step.device).train()
    train_flops = flops_per_image(model, images, None)
    train_rate = trained.meta["images_per_second"]
    step.record(TABLE, {"run": "train, 1 epoch (first epoch: warm-up included)", "data": data_kind,
                        "images": trained.meta["train_size"], "seconds": trained.meta["train_seconds"],
                        "images/s": train_rate, "GFLOP/image": train_flops / 1e9,
                        "share of bf16 peak": train_flops * train_rate / (peak * 1e12) if peak else None})
    if step.out_of_time("RWFT-2-O unlearning"):
        return
    forget = resolve_classes([FORGET], dataset.classes)
    ctx = UnlearnContext(original=trained.model, meta=trained.meta, dataset=dataset, forget=forget, cfg=cfg,
                         device=step.device)
    result = run_method("rwft-2-o", ctx, {"epochs": 1} if step.dry_run else None)
    epochs = result.hyperparameters["epochs"]
    seen = epochs * len(ctx.splits.train_f)
    student = ctx.copy_original().train()
    blocks = [getattr(student, student.middle_block), getattr(student, student.classifier)]
    rwft_flops = flops_per_image(student, images, [p for block in blocks for p in block.parameters()],
                                 teacher=ctx.original)
    rate = seen / result.wall_seconds
    step.record(TABLE, {"run": f"RWFT-2-O, forget {FORGET}, {epochs} epochs", "data": data_kind, "images": seen,
                        "seconds": result.wall_seconds, "images/s": rate, "GFLOP/image": rwft_flops / 1e9,
                        "share of bf16 peak": rwft_flops * rate / (peak * 1e12) if peak else None,
                        "peak memory MiB": result.peak_memory_bytes / 2**20})


sys.exit(step.run_api(main))
