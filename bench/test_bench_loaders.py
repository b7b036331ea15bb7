"""Images per second of one CIFAR-10 training epoch through three loaders, side by side in one run.

    FASTFORGET_DATA=/path/to/data pytest bench/test_bench_loaders.py --benchmark-only [--benchmark-json=out.json]

Loaders, all over the same uint8 training images with crop-4 + flip augmentation and batches of 256:
  dataloader  torch.utils.data.DataLoader, 2 workers, one PIL image per sample through torchvision's
              RandomCrop(32, padding=4) / RandomHorizontalFlip / ToTensor / Normalize (what torchvision's CIFAR10
              class and most training scripts do): the baseline every ratio is taken against;
  memory      fastforget's InMemoryLoader: whole-batch augmentation with tensor operations, no workers;
  ffcv        fastforget's FFCV loader over a .beton written once per session (skipped without FFCV), 2 workers;
  stream      fastforget's StreamLoader (`data.loader = "stream"`) over the training split written once per
              session as an image folder of PNG files: 2 workers decode whole batches, augmentation as in memory.

`train`: ResNet-18 of the cifar10-resnet18-small config (width 16) trained through `fastforget.train.fit` with
cross-entropy, SGD, bf16 autocast, channels-last; `data`: the loader alone, so its own cost shows. A 2-core
CPU takes about 40 s per ResNet-18 epoch, so `train` runs the first $FASTFORGET_BENCH_TRAIN_BATCHES batches
(default 40) of each epoch and `data` the first $FASTFORGET_BENCH_DATA_BATCHES (default 0: the whole epoch).
Each loader gets a two-batch warm-up pass first (FFCV compiles its pipeline on first use). The device is the
config's (CUDA when there is one).
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from fastforget.config import Config, load_config
from fastforget.data import (
    Augment,
    FFCVUnavailableError,
    ImageDataset,
    ffcv_loader,
    load_dataset,
    make_train_loader,
    write_beton,
)
from fastforget.models import build_model
from fastforget.runtime import resolve_device, seed_everything, synchronize
from fastforget.train import Batch, ExecSpec, SGDSpec, fit

CONFIG = "cifar10-resnet18-small"
LOADERS = ("dataloader", "memory", "ffcv", "stream")  # the baseline first: the ratios are known when the others run
BASELINE = "dataloader"
WORKERS = 2
ROUNDS = 3
WARMUP_BATCHES = 2
BATCHES = {"train": int(os.environ.get("FASTFORGET_BENCH_TRAIN_BATCHES", "40")),
           "data": int(os.environ.get("FASTFORGET_BENCH_DATA_BATCHES", "0"))}
TABLE = "Loaders: images/s, CIFAR-10, batch 256, crop-4 + flip"


class TorchvisionStyleDataset(torch.utils.data.Dataset):
    """One sample at a time as a PIL image through torchvision transforms, as torchvision's CIFAR10 serves it;
    items are (image, label, position) so that `fit` sees the same batches as from fastforget's loaders."""

    def __init__(self, dataset: ImageDataset, transform: transforms.Compose) -> None:
        self.pixels = dataset.train_images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = dataset.train_labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(Image.fromarray(self.pixels[position])), self.labels[position], position


class FirstBatches:
    """The first `count` batches of every pass over `loader` (every batch when `count` is 0), on `device`.

    A pass stopped early is closed at once, inside the timed region, as a training script that moves on would.
    """

    def __init__(self, loader: Any, count: int, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.count = min(count, len(loader)) if count else len(loader)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = iter(self.loader)
        try:
            for batch in itertools.islice(batches, self.count):
                yield tuple(t.to(self.device, non_blocking=True) for t in batch)
        finally:
            if hasattr(batches, "close"):
                batches.close()
            del batches  # a DataLoader iterator shuts its workers down when dropped


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def cifar10(load_or_skip: Callable[[str], ImageDataset]) -> ImageDataset:
    return load_or_skip("cifar10")


@pytest.fixture(scope="module")
def device(cfg: Config) -> torch.device:
    return resolve_device(cfg.train.device)


@pytest.fixture(scope="module")
def beton(cifar10: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training split as a .beton, written once for this run."""
    try:
        return write_beton(cifar10.train_images, cifar10.train_labels, tmp_path_factory.mktemp("ffcv") / "train.beton")
    except FFCVUnavailableError as err:
        pytest.skip(f"FFCV loader not measured: {err}")


@pytest.fixture(scope="module")
def png_folder(cifar10: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training split as train/<class>/<n>.png (and a one-image test/ split), written once for this run."""
    root = tmp_path_factory.mktemp("folder")
    pixels = cifar10.train_images.permute(0, 2, 3, 1).numpy()
    for n, (image, label) in enumerate(zip(pixels, cifar10.train_labels.tolist(), strict=True)):
        folder = root / "train" / f"{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{n:05d}.png")
    (root / "test" / "00").mkdir(parents=True)
    Image.fromarray(pixels[0]).save(root / "test" / "00" / "0.png")
    return root


def open_loader(kind: str, request: pytest.FixtureRequest, cfg: Config, dataset: ImageDataset,
                device: torch.device) -> AbstractContextManager[Iterable]:
    """The training loader `kind` over CIFAR-10's training split, with the config's augmentation and batch size."""
    batch_size, seed = cfg.train.batch_size, cfg.train.seed
    if kind == "memory":
        return nullcontext(make_train_loader(dataset, cfg, indices=None, batch_size=batch_size, device=device,
                                             seed=seed))
    if kind == "stream":
        streamed = load_dataset("imagefolder", request.getfixturevalue("png_folder"), stream=True)
        stream_cfg = load_config(CONFIG, ["data.loader=stream", f"data.workers={WORKERS}"])
        return nullcontext(make_train_loader(streamed, stream_cfg, indices=None, batch_size=batch_size,
                                             device=device, seed=seed))
    if kind == "ffcv":
        augment = Augment(crop_padding=cfg.data["crop_padding"], flip=cfg.data["flip"])
        return ffcv_loader(request.getfixturevalue("beton"), batch_size=batch_size, augment=augment,
                           mean=dataset.mean, std=dataset.std, device=device, drop_last=True, seed=seed,
                           num_workers=WORKERS)
    transform = transforms.Compose([
        transforms.RandomCrop(dataset.image_size, padding=cfg.data["crop_padding"]),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(dataset.mean, dataset.std),
    ])
    return nullcontext(torch.utils.data.DataLoader(
        TorchvisionStyleDataset(dataset, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=WORKERS, pin_memory=device.type == "cuda"))


def cross_entropy(model: nn.Module, batch: Batch, _progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch.images)
    return F.cross_entropy(logits, batch.labels), logits


def fresh_model(cfg: Config, dataset: ImageDataset, device: torch.device) -> nn.Module:
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model["arch"], dataset.num_classes, dataset.in_channels, **cfg.arch_args)
    return model.to(device, memory_format=torch.channels_last)


def one_pass(variant: str, loader: Iterable, model: nn.Module | None, cfg: Config, device: torch.device) -> int:
    """One (capped) epoch; returns the number of images it went through."""
    if variant == "train":
        recipe = cfg.train
        sgd = SGDSpec(lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
        return fit(model, loader, cross_entropy, epochs=1, sgd=sgd, execution=ExecSpec(amp=recipe.amp),
                   desc="bench").images
    images = sum(len(labels) for _, labels, _ in loader)
    synchronize(device)
    return images


@pytest.mark.parametrize("variant", ["data", "train"])
@pytest.mark.parametrize("kind", LOADERS)
def test_loader_throughput(kind: str, variant: str, request: pytest.FixtureRequest, cfg: Config,
                           cifar10: ImageDataset, device: torch.device, benchmark: Any,
                           bench_tables: dict[str, list[dict[str, object]]]) -> None:
    model = fresh_model(cfg, cifar10, device) if variant == "train" else None
    seconds: list[float] = []

    def timed_pass(loader: FirstBatches) -> int:
        start = time.perf_counter()
        images = one_pass(variant, loader, model, cfg, device)
        seconds.append(time.perf_counter() - start)
        return images

    with open_loader(kind, request, cfg, cifar10, device) as loader:
        one_pass(variant, FirstBatches(loader, WARMUP_BATCHES, device), model, cfg, device)
        capped = FirstBatches(loader, BATCHES[variant], device)
        images = benchmark.pedantic(timed_pass, args=(capped,), rounds=ROUNDS, iterations=1)
    assert images == len(capped) * cfg.train.batch_size
    median = statistics.median(seconds)
    images_per_second = images / median
    baseline = [row for row in bench_tables.get(TABLE, []) if row["loader"] == BASELINE and row["variant"] == variant]
    ratio = images_per_second / baseline[0]["images/s"] if baseline else None
    benchmark.extra_info.update(loader=kind, variant=variant, images=images, batches=len(capped),
                                batch_size=cfg.train.batch_size, workers=0 if kind == "memory" else WORKERS,
                                device=str(device), images_per_second=images_per_second,
                                ratio_vs_dataloader=ratio, torch_threads=torch.get_num_threads())
    bench_tables.setdefault(TABLE, []).append({"variant": variant, "loader": kind, "batches": len(capped),
                                               "median s": median, "images/s": images_per_second,
                                               "x DataLoader": ratio})


def test_torchvision_style_dataset_serves_the_same_pixels() -> None:
    """The baseline is over the same data: with no augmentation its samples are the normalised uint8 images."""
    rng = np.random.default_rng()
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 7, 9), dtype=np.uint8))
    dataset = ImageDataset("random", images, torch.arange(5), images, torch.arange(5), [str(i) for i in range(5)],
                           mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    served = TorchvisionStyleDataset(dataset, transforms.Compose([transforms.ToTensor(),
                                                                  transforms.Normalize(dataset.mean, dataset.std)]))
    mean, std = torch.tensor(dataset.mean)[:, None, None], torch.tensor(dataset.std)[:, None, None]
    for position in range(5):
        image, label, index = served[position]
        torch.testing.assert_close(image, (images[position].float() / 255 - mean) / std)
        assert (label, index) == (position, position)
