"""Images read from their source batch by batch, for data that do not fit in memory (`data.loader = "stream"`).

`StreamedImages` stands where an `ImageDataset` holds a uint8 tensor: it knows how many images there are and their
shape, selects subsets without reading anything, and decodes only when a loader asks for a batch. Its source is
an image folder's files (`load_dataset("imagefolder", root, stream=True)`) or a user's torch `Dataset`
(`api.unlearn(..., data=ImageFolder(...), test_data=..., overrides=["data.loader=stream"])`: torchvision's
`ImageFolder` read by a DataLoader's workers).
`StreamLoader` yields the batches of `InMemoryLoader` (the same order, augmentation and normalisation from the
same seed: bit-identical for the same pixels), with the decoding done ahead by DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fastforget.data.loaders import Augment, Batch, EpochLoader
from fastforget.distributed import Shard
from fastforget.errors import CorruptDataError

Reader = Callable[[int], torch.Tensor]
"""Image i of a source as a uint8 [C, H, W] tensor (a reader may name image i by a `describe(i)` method)."""


class StreamedImages:
    """`count` images of one shape [C, H, W] that `read(i)` decodes, or a subset of them (`rows`)."""

    def __init__(self, read: Reader, count: int, shape: Sequence[int], rows: np.ndarray | None = None) -> None:
        self.read, self.count = read, count
        self.rows = np.arange(count, dtype=np.int64) if rows is None else rows
        self.shape = torch.Size([len(self.rows), *shape])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> StreamedImages:
        """The subset at `index` (positions, a boolean mask or a slice), still unread."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return StreamedImages(self.read, self.count, self.shape[1:], self.rows[index].reshape(-1))

    def decode(self, positions: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The images at `positions` (of this subset) as one uint8 [n, C, H, W] tensor."""
        images = [self.read(int(self.rows[p])) for p in positions]
        for position, image in zip(positions, images, strict=True):
            if image.shape != self.shape[1:]:
                row = int(self.rows[position])
                name = self.read.describe(row) if hasattr(self.read, "describe") else f"image {row}"
                raise CorruptDataError(f"{name} is {'x'.join(map(str, image.shape))}, not "
                                       f"{'x'.join(map(str, self.shape[1:]))}: images must all have one size "
                                       "(data.image_size = N resizes them on reading)")
        return torch.stack(images) if images else torch.empty(0, *self.shape[1:], dtype=torch.uint8)

    def __repr__(self) -> str:
        return f"StreamedImages({len(self)} of {self.count}, image={'x'.join(map(str, self.shape[1:]))})"


def streamed(read: Reader, count: int) -> StreamedImages:
    """All `count` images of a source; the shape is the first image's (every image must share it)."""
    if count == 0:
        raise ValueError("an image source needs at least one image")
    return StreamedImages(read, count, read(0).shape)


class _Batches(Dataset):
    """Item j is batch j of an epoch, decoded: DataLoader workers read whole batches ahead of the training loop."""

    def __init__(self, images: StreamedImages, batches: list[np.ndarray]) -> None:
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.images.decode(self.batches[j])


def default_workers() -> int:
    """Decoding processes: one per core but one (for the training loop), at most 8; none on a single core."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


class StreamLoader(EpochLoader):
    """Batches `(images, labels, indices)` of `StreamedImages`, as `InMemoryLoader` gives them for tensors.

    Each epoch draws the order and augments on `device` exactly as the in-memory loader does (`EpochLoader`), so
    the two give identical batches for the same seed; `workers` processes decode the next batches meanwhile
    (0: decode in this process; -1: `default_workers()`). Under torchrun each rank decodes only its rows.
    """

    def __init__(self, images: StreamedImages, labels: torch.Tensor, *, batch_size: int, shuffle: bool = True,
                 augment: Augment = Augment(), mean: Sequence[float], std: Sequence[float],
                 device: str | torch.device = "cpu", drop_last: bool = False, seed: int = 0,
                 indices: torch.Tensor | Sequence[int] | None = None, dtype: torch.dtype = torch.float32,
                 shard: Shard = Shard(), workers: int = -1) -> None:
        super().__init__(len(images), labels, images.shape[1], batch_size=batch_size, shuffle=shuffle,
                         augment=augment, mean=mean, std=std, device=device, drop_last=drop_last, seed=seed,
                         indices=indices, dtype=dtype, shard=shard)
        self.images = images
        self.workers = default_workers() if workers < 0 else workers

    def __iter__(self) -> Iterator[Batch]:
        order, transform, starts = self.next_epoch()
        drawn = [order[start:start + self.batch_size] for start in starts]
        mine = [batch[self.shard.rank::self.shard.world] for batch in drawn]
        workers = min(self.workers, len(mine))
        decoded = DataLoader(_Batches(self.images, mine), batch_size=None, shuffle=False, num_workers=workers,
                             pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None)
        for pixels, batch, global_batch in zip(decoded, mine, drawn, strict=True):
            pixels = pixels.to(self.device, non_blocking=True).permute(0, 2, 3, 1)
            positions = torch.from_numpy(batch).to(self.device)
            yield transform(pixels, self.shard, len(global_batch)), self.labels[positions], positions


__all__ = ["StreamLoader", "StreamedImages", "default_workers", "streamed"]
