"""FFCV: data sets written once to .beton files and read back by FFCV's compiled, multi-threaded loader.

FFCV is optional (`pip install ffcv==1.0.2`, see docs/FFCV_INSTALL.md): this module imports it only when used,
and `ffcv_available()` says whether it can be. Images are stored raw (not JPEG) so pixels come back exactly:
3-channel images as FFCV's RGB image field, 1-channel images (MNIST) as a uint8 array field, since FFCV's image
field only holds RGB. Each sample also stores its label and its position in the source split.

FFCV's pipeline does the reading and decoding; crop and flip run afterwards on the device with the in-memory
loader's `BatchTransform`. FFCV's own RandomTranslate and RandomHorizontalFlip draw from an unseeded NumPy
generator inside its worker threads, so they can neither repeat a run nor match the in-memory loader; this way
the two loaders give the same batches for the same seed (the sample order uses FFCV's seeded RANDOM order,
which `epoch_order` reproduces).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from fastforget.data.loaders import Augment, Batch, BatchTransform, _check_stats, _positions
from fastforget.data.sources import ImageDataset
from fastforget.errors import CorruptDataError, DataNotFoundError, FastForgetError
from fastforget.io import atomic_path
from fastforget.runtime import progress_enabled

INSTALL_HINT = "install it with `pip install ffcv==1.0.2` (system packages first: see docs/FFCV_INSTALL.md)"


class FFCVUnavailableError(FastForgetError, ImportError):
    """FFCV is not installed, or cannot be imported here."""


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """FFCV sets torch's CPU thread count to its worker count (to 1 on import): put the caller's back, so that
    reading data does not change how fast, or in what order of operations, the model computes."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def _import_error() -> str | None:
    """Why `import ffcv` fails, or None when it works (checked once: the import takes seconds)."""
    try:
        with _torch_threads_kept():
            import ffcv.loader  # noqa: F401
    except Exception as err:  # a broken install fails in many ways (missing libturbojpeg, numba/numpy mismatch)
        return f"{type(err).__name__}: {err}"
    return None


def ffcv_available() -> bool:
    """Whether FFCV can be imported (an installed but broken FFCV counts as unavailable)."""
    return _import_error() is None


def _require_ffcv() -> None:
    if _import_error() is not None:
        raise FFCVUnavailableError(f"FFCV is not usable here ({_import_error()}); {INSTALL_HINT}")


class _Samples:
    """The indexable (image HWC uint8, label, position) view that FFCV's writer reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.numpy()

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, position: int) -> tuple[np.ndarray, int, int]:
        return self.pixels[position], int(self.labels[position]), int(position)


def write_beton(images: torch.Tensor, labels: torch.Tensor, path: str | Path, *,
                num_workers: int | None = None) -> Path:
    """Write uint8 images [N, C, H, W] (C = 1 or 3) with their labels and positions to a .beton file, atomically."""
    _require_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"write_beton needs uint8 [N, C, H, W] images with C = 1 or 3, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if len(labels) != len(images) or len(images) == 0:
        raise ValueError(f"write_beton needs as many labels as images (and at least one), got {len(images)} "
                         f"images and {len(labels)} labels")
    height, width = images.shape[2:]
    image_field = RGBImageField(write_mode="raw") if images.shape[1] == 3 \
        else NDArrayField(np.dtype("u1"), (height, width, 1))
    fields = {"image": image_field, "label": IntField(), "index": IntField()}
    samples = _Samples(images.cpu(), torch.as_tensor(labels).cpu().to(torch.int64))
    with atomic_path(path) as tmp, _quiet_unless_progress():
        DatasetWriter(str(tmp), fields, num_workers=num_workers or os.cpu_count() or 1).from_indexed_dataset(samples)
    return Path(path)


@contextlib.contextmanager
def _quiet_unless_progress() -> Iterator[None]:
    """FFCV's writer always draws a progress bar; hide it when fastforget's progress bars are off."""
    if progress_enabled():
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def prepare(dataset: ImageDataset, out_dir: str | Path) -> dict[str, Path]:
    """Write `out_dir/train.beton` and `out_dir/test.beton` for `dataset` (what `fastforget data prepare` does)."""
    out = Path(out_dir)
    return {"train": write_beton(dataset.train_images, dataset.train_labels, out / "train.beton"),
            "test": write_beton(dataset.test_images, dataset.test_labels, out / "test.beton")}


class FFCVLoader:
    """Batches `(images, labels, indices)` read from a .beton file, like `InMemoryLoader`'s.

    `indices` are positions in the source split (as stored in the file). Each pass is one epoch; order and
    augmentation come from `seed + epoch`. FFCV's epoch iterators hold a thread and shared memory: a pass left
    half-way is closed when its generator is, and `close()` (or leaving a `with` block) closes any still open,
    since one left open can crash the process at exit.
    """

    def __init__(self, path: str | Path, *, batch_size: int, shuffle: bool = True, augment: Augment = Augment(),
                 mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu",
                 drop_last: bool = False, seed: int = 0, indices: torch.Tensor | Sequence[int] | None = None,
                 dtype: torch.dtype = torch.float32, num_workers: int | None = None,
                 distributed: bool = False) -> None:
        _require_ffcv()
        from ffcv.fields import NDArrayField, RGBImageField
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.reader import Reader
        from ffcv.transforms import ToDevice, ToTensor

        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"{path} does not exist: write it with `fastforget data prepare` or write_beton")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        reader = Reader(str(path))
        image_field = reader.handlers.get("image")
        if set(reader.handlers) != {"image", "label", "index"} or \
                not isinstance(image_field, (RGBImageField, NDArrayField)):
            raise CorruptDataError(f"{path} was not written by fastforget's write_beton (its fields are "
                             f"{list(reader.handlers)}, expected image, label, index); write it again")
        channels = 3 if isinstance(image_field, RGBImageField) else image_field.shape[-1]
        _check_stats(mean, std, channels)
        self.device = torch.device(device)
        to_device = [ToDevice(self.device, non_blocking=True)] if self.device.type == "cuda" else []
        positions = _positions(indices, reader.num_samples)
        with _torch_threads_kept():
            self._loader = Loader(
                str(path), batch_size=batch_size, num_workers=num_workers or os.cpu_count() or 1,
                order=OrderOption.RANDOM if shuffle else OrderOption.SEQUENTIAL, seed=seed,
                indices=positions.astype(np.uint64), drop_last=drop_last, distributed=distributed,
                pipelines={"image": [ToTensor(), *to_device],
                           "label": [IntDecoder(), ToTensor(), *to_device],
                           "index": [IntDecoder(), ToTensor(), *to_device]})
        self.augment, self.mean, self.std = augment, tuple(mean), tuple(std)
        self.seed, self.dtype = seed, dtype
        self._open: set[Any] = set()

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Batch]:
        transform = BatchTransform(self.augment, self.mean, self.std, device=self.device, dtype=self.dtype,
                                   seed=self.seed, epoch=self._loader.next_epoch)
        with _torch_threads_kept():
            epoch = iter(self._loader)
        self._open.add(epoch)
        try:
            for pixels, labels, positions in epoch:
                yield (transform(pixels),
                       labels.reshape(-1).to(self.device, torch.int64, copy=True),
                       positions.reshape(-1).to(self.device, torch.int64, copy=True))
        finally:
            self._close_epoch(epoch)

    def _close_epoch(self, epoch: Any) -> None:
        epoch.close()
        epoch.join(timeout=10)
        self._open.discard(epoch)

    def close(self) -> None:
        """Stop any pass still running (its worker thread and shared memory)."""
        for epoch in list(self._open):
            self._close_epoch(epoch)

    def __enter__(self) -> FFCVLoader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def ffcv_loader(path: str | Path, *, batch_size: int, shuffle: bool = True, augment: Augment = Augment(),
                mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu",
                drop_last: bool = False, seed: int = 0, indices: torch.Tensor | Sequence[int] | None = None,
                dtype: torch.dtype = torch.float32, num_workers: int | None = None,
                distributed: bool = False) -> FFCVLoader:
    """An `FFCVLoader` over a .beton file written by `write_beton` (use it in a `with` block); `distributed`:
    FFCV's own sharding over the torchrun group (each rank gets `batch_size` samples per step)."""
    return FFCVLoader(path, batch_size=batch_size, shuffle=shuffle, augment=augment, mean=mean, std=std,
                      device=device, drop_last=drop_last, seed=seed, indices=indices, dtype=dtype,
                      num_workers=num_workers, distributed=distributed)
