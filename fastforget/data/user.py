"""A user's own data as an `ImageDataset`: a torch `Dataset`, `(images, labels)` tensors, or a data set name.

Everything fastforget runs holds its images as uint8 [N, C, H, W] (augmented and normalised per batch on the
device), so user data are converted once: uint8 images stay as they are; float images must be in [0, 1] (what
`transforms.ToTensor()` gives) and are rounded to the 256 levels; PIL images and numpy arrays (HWC) are read like
torchvision reads them. A `transform` is applied to every sample first (PIL image or tensor in, image out), e.g.
a resize. Normalisation statistics come from the training split. Everything is held in memory, unless
`stream=True` leaves a Dataset's images unread until a loader decodes them per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fastforget.data.sources import ImageDataset, channel_stats, load_dataset, sample_stats
from fastforget.data.stream import StreamedImages, streamed
from fastforget.errors import DataError

DataLike = ImageDataset | str | Dataset | tuple[torch.Tensor, torch.Tensor]
"""What the API takes as data: an ImageDataset, a data set name, a torch Dataset or (images, labels) tensors."""


def as_image_dataset(data: DataLike, test_data: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None, *,
                     classes: Sequence[str] | None = None, root: str | Path | None = None,
                     transform: Callable[[Any], Any] | None = None, name: str = "custom", stream: bool = False,
                     image_size: int = 0) -> ImageDataset:
    """`data` (the training split) and `test_data` (held-out samples of the same classes) as one ImageDataset.

    A name or an ImageDataset already holds both splits; user data need `test_data`, since accuracy and every
    membership attack compare training samples with unseen ones. `classes` names the labels 0..K-1 (default: the
    Dataset's `classes` attribute, else the label numbers). With `stream`, an image folder (by name) or a torch
    Dataset is not read into memory: its images are decoded per batch (`StreamedImages`); `image_size` resizes an
    image folder on reading.
    """
    if isinstance(data, ImageDataset | str):
        if test_data is not None:
            raise DataError("test_data is only for user data: a data set name or an ImageDataset has its own split")
        return data if isinstance(data, ImageDataset) else load_dataset(data, root, stream=stream,
                                                                        image_size=image_size)
    if test_data is None:
        raise DataError("user data need test_data= too (held-out samples of the same classes): accuracy and the "
                        "membership attacks compare training samples with unseen ones")
    split = _streamed_split if stream else _tensors
    train_images, train_labels = split(data, "data", transform)
    test_images, test_labels = split(test_data, "test_data", transform)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    names = list(classes or getattr(data, "classes", None) or [str(i) for i in range(num_classes)])
    if len(names) < num_classes or len(names) < 2:
        raise DataError(f"the labels run to {num_classes - 1} but {len(names)} class names were given: name every "
                        "class 0..K-1 (classes=[...]); there must be at least two")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"training images are {tuple(train_images.shape[1:])} but test images are "
                        f"{tuple(test_images.shape[1:])}: give both splits one shape (transform=...)")
    mean, std = sample_stats(train_images) if stream else channel_stats(train_images)
    return ImageDataset(name=name, train_images=train_images, train_labels=train_labels, test_images=test_images,
                        test_labels=test_labels, classes=names, mean=mean, std=std)


def _tensors(data: Any, what: str, transform: Callable[[Any], Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        if transform is not None:
            images = torch.stack([torch.as_tensor(_image(transform(image), what)) for image in images])
    elif isinstance(data, Dataset):
        if len(data) == 0:
            raise DataError(f"{what} is an empty Dataset")
        items = [data[i] for i in range(len(data))]
        images = torch.stack([_image(transform(item[0]) if transform else item[0], what) for item in items])
        labels = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise DataError(f"{what} must be a torch Dataset of (image, label) or an (images, labels) pair of tensors, "
                        f"not {type(data).__name__}")
    images = _uint8(images if images.dim() == 4 else images.unsqueeze(1), what)
    return images.contiguous(), _labels(labels, len(images), what)


def _streamed_split(data: Any, what: str, transform: Callable[[Any], Any] | None,
                    ) -> tuple[StreamedImages, torch.Tensor]:
    """A torch Dataset left unread: its images decoded per batch (in loader workers), its labels read now."""
    if not isinstance(data, Dataset):
        raise DataError(f"stream=True is for a torch Dataset (e.g. torchvision's ImageFolder), not "
                        f"{type(data).__name__}: tensors are in memory already, pass them without stream")
    if len(data) == 0:
        raise DataError(f"{what} is an empty Dataset")
    images = streamed(DatasetReader(data, transform, what), len(data))
    return images, _labels(dataset_labels(data), len(images), what)


class DatasetReader:
    """Reads sample i of a user's torch `Dataset` (image, label), through `transform` if given, as uint8 CHW."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any] | None, what: str) -> None:
        self.dataset, self.transform, self.what = dataset, transform, what

    def __call__(self, i: int) -> torch.Tensor:
        image = self.dataset[i][0]
        image = _image(self.transform(image) if self.transform else image, self.what)
        return _uint8((image if image.dim() == 3 else image.unsqueeze(0)).unsqueeze(0), self.what)[0]

    def describe(self, i: int) -> str:
        return f"{self.what}[{i}]"


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """A Dataset's labels without decoding its images where it lists them (`targets`, as torchvision's do)."""
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


def _labels(labels: torch.Tensor, count: int, what: str) -> torch.Tensor:
    """Validated int64 class indices, one per image."""
    labels = labels.to(torch.int64).flatten() if not labels.is_floating_point() else labels
    if labels.is_floating_point() or labels.shape != (count,):
        raise DataError(f"{what}: labels must be {count} integers, one per image, not {labels.dtype} "
                        f"{tuple(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{what}: labels must be class indices 0..K-1, found {int(labels.min())}")
    return labels


def _image(image: Any, what: str) -> torch.Tensor:
    """One sample's image as a CHW (or HW) tensor, read the way torchvision reads it."""
    if isinstance(image, torch.Tensor):
        return image
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1) if image.ndim == 3 else image))
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL ships with torchvision
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(image)
    raise DataError(f"{what}: a sample's image is a {type(image).__name__}; give tensors, numpy arrays or PIL images")


def _uint8(images: torch.Tensor, what: str) -> torch.Tensor:
    if images.dim() != 4:
        raise DataError(f"{what}: images must be [N, C, H, W] (or [N, H, W]), not {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise DataError(f"{what}: images must be uint8 or float in [0, 1], not {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise DataError(f"{what}: float images must be in [0, 1] (transforms.ToTensor(), no Normalize: fastforget "
                        f"normalises itself), found values in [{low:.3g}, {high:.3g}]")
    return images.mul(255).round().to(torch.uint8)
