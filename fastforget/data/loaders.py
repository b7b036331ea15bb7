"""Batches from uint8 images held on the training device, augmented and normalised there, whole batch at a time.

Small image data sets fit in accelerator memory many times over, so the fastest loader keeps the raw uint8 pixels
on the device and does per-batch work with a few tensor operations instead of a worker pool decoding and
augmenting one sample at a time in Python (the approach of airbench). `BatchTransform` is shared with the FFCV
loader so that both produce the same batches from the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fastforget.distributed import Shard

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation.

    crop_padding: random crop of the zero-padded image back to its size, i.e. a shift of each image by up to
        `crop_padding` pixels in each direction with zeros filling the border (0 = no crop).
    flip: horizontal flip with probability 1/2, applied after the crop.
    """

    crop_padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")


def epoch_order(positions: np.ndarray, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The positions in the order one epoch visits them.

    The shuffle is NumPy's `default_rng(seed + epoch).permutation`, the formula FFCV's RANDOM order uses, so the
    in-memory and FFCV loaders visit samples in the same order for the same seed.
    """
    return np.random.default_rng(seed + epoch).permutation(positions) if shuffle else positions


def _check_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> None:
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {tuple(std)}")


class BatchTransform:
    """Augments and normalises uint8 batches on their device; one instance per epoch, so its draws repeat.

    A handful of kernels per batch, whatever its size: crop and flip are one gather from the zero-padded batch
    whose row and column indices carry each sample's shift and flip, and normalisation is one lookup in a table
    of the 256 normalised values of each channel (computed once, with the same float32 arithmetic as
    `(pixel * scale) + shift`, so the values are bit-identical to normalising pixel by pixel). Random draws come
    from a generator on the device seeded with `seed + epoch`: one draw of shifts and one of flips per batch.
    """

    def __init__(self, augment: Augment, mean: Sequence[float], std: Sequence[float], *,
                 device: torch.device, dtype: torch.dtype, seed: int, epoch: int) -> None:
        self.augment = augment
        self.device = device
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        scale = 1.0 / (255.0 * std_t)
        shift = -torch.tensor(mean, dtype=torch.float32, device=device) / std_t
        levels = torch.arange(256, dtype=torch.float32, device=device)[:, None]
        self.table = levels.mul(scale).add(shift).to(dtype)  # [256, C]: every pixel value of each channel
        self.generator = torch.Generator(device=device).manual_seed(seed + epoch)
        self._grids: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}

    def _grid(self, batch: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """Row and column indices into the padded batch before any shift or flip, and the sample indices."""
        key = (batch, height, width)
        if key not in self._grids:
            padding = self.augment.crop_padding
            self._grids[key] = (torch.arange(padding, height + padding, device=self.device).expand(batch, height),
                                torch.arange(padding, width + padding, device=self.device).expand(batch, width),
                                torch.arange(batch, device=self.device)[:, None, None])
        return self._grids[key]

    def __call__(self, pixels: torch.Tensor, shard: Shard = Shard(), drawn: int | None = None) -> torch.Tensor:
        """A uint8 batch [B, H, W, C] (any strides) as a normalised float batch [B, C, H, W], channels-last.

        With a `shard`, `pixels` are rows rank, rank + world, ... of a global batch of `drawn` samples: the random
        draws are made for the whole global batch and this shard takes its rows, as a single process would."""
        batch, height, width, channels = pixels.shape
        drawn = batch if drawn is None else drawn
        mine = slice(shard.rank, None, shard.world)
        padding = self.augment.crop_padding
        if padding or self.augment.flip:
            rows, cols, samples = self._grid(batch, height, width)
            if padding:
                shifts = torch.randint(-padding, padding + 1, (drawn, 2), generator=self.generator,
                                       device=self.device)[mine]
                rows, cols = rows + shifts[:, :1], cols + shifts[:, 1:]
                pixels = F.pad(pixels, (0, 0, padding, padding, padding, padding))  # the zeros a shift brings in
            if self.augment.flip:
                flipped = torch.rand(drawn, generator=self.generator, device=self.device)[mine] < 0.5
                cols = torch.where(flipped[:, None], cols.flip(1), cols)
            pixels = pixels[samples, rows[:, :, None], cols[:, None, :]]
        levels = pixels.to(torch.int64, memory_format=torch.contiguous_format).view(-1, channels)
        images = torch.gather(self.table, 0, levels).view(batch, height, width, channels)
        return images.permute(0, 3, 1, 2)


class EpochLoader:
    """What every loader of this package shares: validation, the subset, and per epoch the order and augmentation
    drawn from `seed + epoch` (`next_epoch`), so that loaders over the same samples give the same batches."""

    def __init__(self, count: int, labels: torch.Tensor, channels: int, *, batch_size: int, shuffle: bool,
                 augment: Augment, mean: Sequence[float], std: Sequence[float], device: str | torch.device,
                 drop_last: bool, seed: int, indices: torch.Tensor | Sequence[int] | None, dtype: torch.dtype,
                 shard: Shard) -> None:
        if len(labels) != count:
            raise ValueError(f"{count} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size % shard.world:
            raise ValueError(f"the global batch of {batch_size} does not split evenly over {shard.world} ranks: "
                             "choose a batch size divisible by the number of processes")
        _check_stats(mean, std, channels)
        self.shard = shard
        self.device = torch.device(device)
        self.labels = torch.as_tensor(labels).to(self.device, torch.int64)
        self.positions = _positions(indices, count)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.mean, self.std = augment, tuple(mean), tuple(std)
        self.seed, self.dtype = seed, dtype
        self.epoch = 0  # the epoch the next pass draws its order and augmentation from

    def __len__(self) -> int:
        return _num_batches(len(self.positions), self.batch_size, self.drop_last)

    def next_epoch(self) -> tuple[np.ndarray, BatchTransform, range]:
        """This pass's order of positions, its augmentation and where each global batch starts in the order; the
        next pass draws anew."""
        order = epoch_order(self.positions, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)
        transform = BatchTransform(self.augment, self.mean, self.std, device=self.device, dtype=self.dtype,
                                   seed=self.seed, epoch=self.epoch)
        self.epoch += 1
        return order, transform, range(0, len(self) * self.batch_size, self.batch_size)


class InMemoryLoader(EpochLoader):
    """Batches `(images, labels, indices)` of uint8 images kept on `device`.

    `images` come out normalised, in `dtype`, in channels-last memory format; `indices` are the positions of the
    samples in `images` (not in `indices`), so methods can look up per-sample targets. `indices` restricts the
    loader to a subset. Each pass over the loader is one epoch: with `shuffle`, the order and the augmentation
    are drawn from `seed + epoch`, so runs repeat exactly. `len()` is the number of batches. Under data-parallel
    training (`shard`: this rank of the torchrun group) every rank draws the same order and takes rows
    rank::world of each global batch of `batch_size`, which the world size must divide.
    Images already on `device` are used in place (no copy), so several loaders over one data set share it;
    images stored channels-last make the per-batch selection a plain copy.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, shuffle: bool = True,
                 augment: Augment = Augment(), mean: Sequence[float], std: Sequence[float],
                 device: str | torch.device = "cpu", drop_last: bool = False, seed: int = 0,
                 indices: torch.Tensor | Sequence[int] | None = None, dtype: torch.dtype = torch.float32,
                 shard: Shard = Shard()) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        super().__init__(len(images), labels, images.shape[1], batch_size=batch_size, shuffle=shuffle,
                         augment=augment, mean=mean, std=std, device=device, drop_last=drop_last, seed=seed,
                         indices=indices, dtype=dtype, shard=shard)
        self.images = images.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        order, transform, starts = self.next_epoch()
        order_t = torch.from_numpy(np.ascontiguousarray(order)).to(self.device)  # one copy per epoch
        for start in starts:
            drawn = order_t[start:start + self.batch_size]
            batch = drawn[self.shard.rank::self.shard.world]
            pixels = self.images.index_select(0, batch).permute(0, 2, 3, 1)
            yield transform(pixels, self.shard, len(drawn)), self.labels[batch], batch


def _positions(indices: torch.Tensor | Sequence[int] | None, size: int) -> np.ndarray:
    """Validated int64 positions into a source of `size` samples (all of them when `indices` is None)."""
    if indices is None:
        return np.arange(size, dtype=np.int64)
    positions = torch.as_tensor(indices).cpu()
    if positions.dtype.is_floating_point or positions.dtype == torch.bool or positions.dim() != 1:
        raise ValueError(f"indices must be a 1-d sequence of integer positions, got {positions.dtype} "
                         f"{tuple(positions.shape)}")
    positions = positions.to(torch.int64).numpy()
    if positions.size and (positions.min() < 0 or positions.max() >= size):
        raise ValueError(f"indices must lie in [0, {size}), got {positions.min()}..{positions.max()}")
    return positions


def _num_batches(samples: int, batch_size: int, drop_last: bool) -> int:
    return samples // batch_size if drop_last else -(-samples // batch_size)
