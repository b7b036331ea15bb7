"""From a config to data and loaders: the one place that reads `data.loader`, `data.crop_padding`, `data.flip`,
`data.image_size` and `data.workers`.

The recipe (originals, retrained, shadow models) and every unlearning method get their batches from
`make_train_loader`, and inference its batches from `ordered_loader`, so `data.loader = "ffcv"` or `"stream"`
reaches all of them.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from fastforget import distributed
from fastforget.config import Config
from fastforget.data.ffcv import ffcv_available, ffcv_loader, write_beton
from fastforget.data.loaders import Augment, InMemoryLoader
from fastforget.data.sources import ImageDataset, cache_dir, load_dataset
from fastforget.data.stream import StreamedImages, StreamLoader
from fastforget.distributed import Shard
from fastforget.errors import ConfigError

LOADERS = ("memory", "ffcv", "stream")


def config_dataset(cfg: Config, root: str | Path | None = None) -> ImageDataset:
    """The config's data set (`data.name`, `data.root` unless `root`), left on disk for `data.loader = "stream"`."""
    return load_dataset(cfg.data["name"], root or cfg.data.get("root") or None, **dataset_options(cfg))


def dataset_options(cfg: Config) -> dict:
    """How `load_dataset` reads the config's data: streamed or not, resized or not."""
    return {"stream": cfg.data.get("loader") == "stream", "image_size": cfg.data.get("image_size", 0)}


def ordered_loader(images: torch.Tensor | StreamedImages, labels: torch.Tensor, **options) -> Iterable:
    """The loader for `images`: in memory for tensors, streamed (the default number of decoding processes) for
    `StreamedImages`; `options` are the loaders' common keywords."""
    if isinstance(images, StreamedImages):
        return StreamLoader(images, labels, **options)
    return InMemoryLoader(images, labels, **options)


def config_augment(cfg: Config) -> Augment:
    """The training augmentation a config asks for (`data.crop_padding`, `data.flip`)."""
    return Augment(crop_padding=cfg.data.get("crop_padding", 0), flip=cfg.data.get("flip", False))


def ffcv_folder(dataset: ImageDataset) -> Path:
    """Where the data set's .beton files live in the cache (keyed by its content): `fastforget data prepare`
    writes them there, `data.loader = "ffcv"` reads them."""
    stride = max(1, len(dataset.train_labels) // 1000)
    digest = hashlib.sha1(dataset.train_labels.numpy().tobytes())
    digest.update(dataset.train_images[::stride].numpy().tobytes())
    return cache_dir() / "ffcv" / f"{dataset.name}-{digest.hexdigest()[:12]}"


def ffcv_train_file(dataset: ImageDataset) -> Path:
    """The data set's training split as a .beton in the cache, written on first use."""
    path = ffcv_folder(dataset) / "train.beton"
    if not path.is_file():
        write_beton(dataset.train_images, dataset.train_labels, path)
    return path


def make_train_loader(dataset: ImageDataset, cfg: Config, *, indices: torch.Tensor | None, batch_size: int,
                      device: torch.device, seed: int, shuffle: bool = True, augment: bool = True,
                      drop_last: bool | None = None, images: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None) -> Iterable:
    """The config's loader (`data.loader`: memory, ffcv or stream) over the training samples at `indices`.

    `augment` off gives the plain normalised images; `drop_last` defaults to `shuffle` (a training pass drops
    its ragged last batch, an ordered pass keeps every sample). `images` and `labels` are the training split
    already on `device`, to be shared by several in-memory loaders (default: the data set's own tensors).
    Under torchrun (`fastforget train --ddp`) a shuffled (training) pass is sharded: `batch_size` stays the
    global batch and each rank loads its share; an ordered pass (evaluation, targets) stays whole on every rank.
    """
    options = dict(batch_size=batch_size, shuffle=shuffle, augment=config_augment(cfg) if augment else Augment(),
                   mean=dataset.mean, std=dataset.std, device=device,
                   drop_last=shuffle if drop_last is None else drop_last, seed=seed, indices=indices)
    shard = distributed.shard() if shuffle else Shard()
    kind = cfg.data.get("loader", "memory")
    if kind not in LOADERS:
        raise ConfigError(f"data.loader must be 'memory', 'ffcv' or 'stream', not {kind!r}")
    images = dataset.train_images if images is None else images
    if isinstance(images, StreamedImages):  # left on disk (data.loader = "stream", or a streamed Dataset)
        return StreamLoader(images, dataset.train_labels if labels is None else labels, shard=shard,
                            workers=cfg.data.get("workers", -1), **options)
    if kind == "ffcv":
        if ffcv_available():
            # FFCV shards by itself: each rank loads its part of the global batch
            return ffcv_loader(ffcv_train_file(dataset), **{**options, "batch_size": batch_size // shard.world},
                               distributed=shard.world > 1)
        warnings.warn("data.loader = 'ffcv' but FFCV is not installed here: using the in-memory loader "
                      "(scripts/setup.sh installs FFCV where apt is available)", stacklevel=2)
    return InMemoryLoader(images, dataset.train_labels if labels is None else labels, shard=shard, **options)
