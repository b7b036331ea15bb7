"""Data sets read from their standard on-disk layouts into uint8 tensors held in memory.

Every reader returns the same `ImageDataset`, so models, loaders and metrics never see a file format. Layouts
are the ones the data sets are published in (or that torchvision's downloaders write), so a user's existing
download works as it is. Missing files raise `DataNotFoundError` showing the layout expected and where to get it;
unreadable files raise `CorruptDataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastforget.data.stream import StreamedImages, streamed
from fastforget.errors import CorruptDataError, DataNotFoundError
from fastforget.io import atomic_path

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet", "imagefolder")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Decoding JPEG/PNG folders is the one slow read (Tiny-ImageNet: ~110k files, tens of seconds); below this many
# files decoding takes well under a second and a cache file would only clutter the cache folder.
DECODE_CACHE_MIN_FILES = 2000

STATS_SAMPLE = 1000  # images read (evenly spaced) for a streamed training split's normalisation statistics

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


@dataclass(repr=False)
class ImageDataset:
    """A whole data set: uint8 NCHW images (in memory, or `StreamedImages` read per batch), int64 labels, class
    names and normalisation statistics."""

    name: str
    train_images: torch.Tensor | StreamedImages
    train_labels: torch.Tensor
    test_images: torch.Tensor | StreamedImages
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if not isinstance(images, StreamedImages) and (images.dtype != torch.uint8 or images.dim() != 4):
                raise ValueError(f"{split}_images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != (len(images),):
                raise ValueError(f"{split}_labels must be int64 [{len(images)}], got {labels.dtype} "
                                 f"{tuple(labels.shape)}")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(f"train images are {tuple(self.train_images.shape[1:])} but test images are "
                             f"{tuple(self.test_images.shape[1:])}")
        if not len(self.mean) == len(self.std) == self.in_channels:
            raise ValueError(f"mean and std need one value per channel ({self.in_channels})")

    @property
    def streamed(self) -> bool:
        """Whether the images stay on disk, decoded per batch (`data.loader = "stream"`)."""
        return isinstance(self.train_images, StreamedImages)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.train_images.shape[2], self.train_images.shape[3]

    @property
    def image_size(self) -> int:
        """Side length of the (square) images, as the models take it."""
        height, width = self.image_shape
        if height != width:
            raise ValueError(f"data set {self.name!r} has non-square {height}x{width} images; use image_shape")
        return height

    def __repr__(self) -> str:
        channels, height, width = self.train_images.shape[1:]
        return (f"ImageDataset(name={self.name!r}, train={len(self.train_images)}, test={len(self.test_images)}, "
                f"image={channels}x{height}x{width}, classes={self.num_classes})")


def cache_dir() -> Path:
    """Where derived files go: $FASTFORGET_CACHE, else ~/.cache/fastforget."""
    return Path(os.environ.get("FASTFORGET_CACHE") or Path.home() / ".cache" / "fastforget")


def default_data_root() -> Path:
    """$FASTFORGET_DATA, else the shared data folder beside the repository, else ~/.cache/fastforget/data."""
    if os.environ.get("FASTFORGET_DATA"):
        return Path(os.environ["FASTFORGET_DATA"])
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data"
    if beside_repo.is_dir():
        return beside_repo
    return Path.home() / ".cache" / "fastforget" / "data"


def load_dataset(name: str, root: str | Path | None = None, *, stream: bool = False,
                 image_size: int = 0) -> ImageDataset:
    """Read data set `name` from `root` (default: `default_data_root()`; for `imagefolder`, the folder itself).

    An image folder can be left on disk (`stream`: images decoded per batch by `StreamLoader`, for folders that do
    not fit in memory) and resized on reading (`image_size`: shorter side to N, then the centre N x N crop).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if (stream or image_size) and key != "imagefolder":
        raise DataNotFoundError(f"data.loader = 'stream' and data.image_size are for image folders; {name} is read "
                                "into memory whole: use data.loader = 'memory' (or 'ffcv') and no image_size")
    readers: dict[str, Callable[[Path | None], ImageDataset]] = {
        "digits": _load_digits,
        "mnist": lambda r: _load_idx_dataset("mnist", _data_root(r)),
        "fashionmnist": lambda r: _load_idx_dataset("fashion-mnist", _data_root(r)),
        "cifar10": lambda r: _load_cifar10(_data_root(r)),
        "cifar100": lambda r: _load_cifar100(_data_root(r)),
        "tinyimagenet": lambda r: _load_tinyimagenet(_data_root(r)),
        "tinyimagenet200": lambda r: _load_tinyimagenet(_data_root(r)),
        "imagefolder": lambda r: _load_imagefolder(r, stream, image_size),
    }
    if key not in readers:
        raise DataNotFoundError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return readers[key](Path(root).expanduser() if root else None)


def _data_root(root: Path | None) -> Path:
    return root if root is not None else default_data_root()


# --- where each data set lives and how to get it (shown when it is missing) -------------------------------------

_LAYOUTS = {
    "mnist": ("MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
              "t10k-labels-idx1-ubyte}.gz (or uncompressed)",
              "torchvision.datasets.MNIST(ROOT, download=True) writes this layout"),
    "fashion-mnist": ("FashionMNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                      "t10k-labels-idx1-ubyte}.gz (or uncompressed)",
                      "torchvision.datasets.FashionMNIST(ROOT, download=True) writes this layout"),
    "cifar10": ("cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch, batches.meta} "
                "(or cifar10-jpeg.zip holding train/<class>/*.jpg and test/<class>/*.jpg)",
                "unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into ROOT"),
    "cifar100": ("cifar-100-python/{train, test, meta}",
                 "unpack https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz into ROOT"),
    "tinyimagenet": ("tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
                     "val/images/*.JPEG, val/val_annotations.txt}",
                     "unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip into ROOT"),
    "imagefolder": ("train/<class>/<image> and test/<class>/<image> or val/<class>/<image> (jpg, png, ...; all "
                    "of one size)",
                    "pass the folder that holds train/ and test/ (or val/) as root"),
}


def _missing(name: str, root: Path, missing: Path) -> DataNotFoundError:
    layout, how = _LAYOUTS[name]
    return DataNotFoundError(
        f"{name}: {missing} not found; expected layout under {root}: {layout}; to get it: {how}, then set "
        "FASTFORGET_DATA (or data.root in the config) to that folder")


def _require(name: str, root: Path, paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise _missing(name, root, path)


# --- statistics --------------------------------------------------------------------------------------------------

def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (in [0, 1] units) of uint8 [N, C, H, W] images, from 256-bin histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(round(mean.item(), 4))
        stds.append(round(var.sqrt().item(), 4))
    return tuple(means), tuple(stds)


def sample_stats(images: StreamedImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of streamed images, from up to STATS_SAMPLE evenly spaced ones."""
    positions = np.linspace(0, len(images) - 1, min(len(images), STATS_SAMPLE)).round().astype(np.int64)
    return channel_stats(images.decode(np.unique(positions)))


def _dataset(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
             classes: list[str]) -> ImageDataset:
    """Assemble an ImageDataset from NCHW uint8 arrays and integer labels; statistics come from the train split."""
    train_images = torch.from_numpy(np.require(train[0], np.uint8, ["C", "W"]))
    test_images = torch.from_numpy(np.require(test[0], np.uint8, ["C", "W"]))
    mean, std = channel_stats(train_images)
    return ImageDataset(name=name, train_images=train_images,
                        train_labels=torch.from_numpy(np.asarray(train[1], dtype=np.int64)),
                        test_images=test_images, test_labels=torch.from_numpy(np.asarray(test[1], dtype=np.int64)),
                        classes=classes, mean=mean, std=std)


# --- scikit-learn digits -----------------------------------------------------------------------------------------

def _load_digits(root: Path | None) -> ImageDataset:
    """scikit-learn's 8x8 digits (values 0..16, scaled to 0..255); a stratified 70/30 split with a fixed seed.

    `root` is ignored: the data ship inside scikit-learn.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_FRACTION, stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED)
    return _dataset("digits", (train_x, train_y), (test_x, test_y), [str(d) for d in range(10)])


# --- MNIST and Fashion-MNIST (IDX files) -------------------------------------------------------------------------

_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"]
_IDX_UBYTE = 0x08


def _load_idx_dataset(name: str, root: Path) -> ImageDataset:
    raw = root / _IDX_FOLDERS[name] / "raw"
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_find_idx(name, root, raw / f"{prefix}-images-idx3-ubyte"), ndim=3)
        labels_path = _find_idx(name, root, raw / f"{prefix}-labels-idx1-ubyte")
        labels = _read_idx(labels_path, ndim=1)
        if len(labels) != len(images):
            raise CorruptDataError(f"{labels_path} has {len(labels)} labels but its image file has {len(images)} "
                                   "images: the files are from different releases; download them again")
        if labels.size and labels.max() > 9:
            raise CorruptDataError(f"{labels_path} holds label {labels.max()}; {name} labels are 0..9")
        splits.append((images[:, None], labels))
    classes = [str(d) for d in range(10)] if name == "mnist" else list(_FASHION_CLASSES)
    return _dataset(name, splits[0], splits[1], classes)


def _find_idx(name: str, root: Path, stem: Path) -> Path:
    """The gzip file if present, else the uncompressed one."""
    for path in (stem.with_name(stem.name + ".gz"), stem):
        if path.is_file():
            return path
    raise _missing(name, root, stem.with_name(stem.name + ".gz"))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its magic number and that its size matches its header."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(f"{path} is not a readable gzip file ({err}); download it again") from err
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise CorruptDataError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number "
                               f"{data[:4].hex() or 'empty'}, expected 0000080{ndim}); download it again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise CorruptDataError(f"{path} holds {len(data)} bytes but its header {shape} needs {expected}: "
                               "the file is truncated or damaged; download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# --- CIFAR (pickled batches) -------------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a tampered data file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes at protocol 2

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, keys: Sequence[bytes]) -> dict:
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise CorruptDataError(f"{path} is not a CIFAR pickle ({err}); download it again") from err
    absent = [key.decode() for key in keys if not isinstance(content, dict) or key not in content]
    if absent:
        raise CorruptDataError(f"{path} lacks the entries {absent} of a CIFAR pickle; download it again")
    return content


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path, [b"data", label_key])
    data = np.asarray(content[b"data"])
    labels = np.asarray(content[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CorruptDataError(f"{path}: expected uint8 data [N, 3072] and N labels, got {data.dtype} "
                               f"{data.shape} and {len(labels)} labels; download it again")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataError(f"{path} holds labels outside 0..{num_classes - 1}; download it again")
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(path: Path, key: bytes) -> list[str]:
    return [name.decode() if isinstance(name, bytes) else str(name) for name in _unpickle(path, [key])[key]]


def _load_cifar10(root: Path) -> ImageDataset:
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir() and (root / "cifar10-jpeg.zip").is_file():
        return _cifar10_from_jpeg(root / "cifar10-jpeg.zip")
    train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    _require("cifar10", root, [*train_files, folder / "test_batch", folder / "batches.meta"])
    classes = _class_names(folder / "batches.meta", b"label_names")
    batches = [_cifar_batch(path, b"labels", len(classes)) for path in train_files]
    train = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    return _dataset("cifar10", train, _cifar_batch(folder / "test_batch", b"labels", len(classes)), classes)


# The order in which the data folder's own converter (cifar10_from_jpeg.py) writes the samples: a fixed shuffle of
# the sorted file names, train split first. Reading the archive in that order gives the same arrays as its output.
CIFAR10_JPEG_SHUFFLE_SEED = 20261127


def _cifar10_from_jpeg(archive: Path) -> ImageDataset:
    """CIFAR-10 from cifar10-jpeg.zip (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg), decoded in-process by
    fastforget's own reader (a data folder never runs code) and cached as arrays, keyed by the archive's path,
    size and modification time."""
    stat = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache_file = cache_dir() / f"cifar10-jpeg-{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as arrays:
                return _dataset("cifar10", (arrays["train_images"], arrays["train_labels"]),
                                (arrays["test_images"], arrays["test_labels"]), [str(c) for c in arrays["classes"]])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache_file.unlink(missing_ok=True)  # damaged cache: decode again below
    try:
        with zipfile.ZipFile(archive) as z:
            names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
            parts = [n.split("/") for n in names]
            if not names or any(len(p) != 3 or p[0] not in ("train", "test") for p in parts):
                raise CorruptDataError(f"{archive} must hold train/<class>/<image>.jpg and test/<class>/<image>.jpg "
                                       f"only (found {names[0] if names else 'no .jpg file'}); download it again")
            classes = sorted({p[1] for p in parts})
            if len(classes) != 10 or {p[1] for p in parts if p[0] == "train"} != set(classes):
                raise CorruptDataError(f"{archive} holds classes {classes[:12]}, not the 10 CIFAR-10 classes in "
                                       "both splits; download it again")
            rng = np.random.default_rng(CIFAR10_JPEG_SHUFFLE_SEED)
            splits = {}
            for split in ("train", "test"):
                rows = [n for n in names if n.startswith(f"{split}/")]
                images = _decode_images([io.BytesIO(z.read(n)) for n in rows], force_rgb=True,
                                        names=[f"{archive}:{n}" for n in rows])
                if images.shape[1:] != (3, 32, 32):
                    raise CorruptDataError(f"{archive}: the {split} images are {images.shape[2]}x{images.shape[3]}, "
                                           "not CIFAR-10's 32x32; download it again")
                labels = np.array([classes.index(n.split("/")[1]) for n in rows], dtype=np.int64)
                order = rng.permutation(len(rows))
                splits[split] = images[order], labels[order]
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptDataError(f"{archive} is not a readable zip archive ({err}); download it again") from None
    with atomic_path(cache_file) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, train_images=splits["train"][0], train_labels=splits["train"][1],
                     test_images=splits["test"][0], test_labels=splits["test"][1], classes=np.array(classes))
    return _dataset("cifar10", splits["train"], splits["test"], classes)


def _load_cifar100(root: Path) -> ImageDataset:
    folder = root / "cifar-100-python"
    _require("cifar100", root, [folder / "train", folder / "test", folder / "meta"])
    classes = _class_names(folder / "meta", b"fine_label_names")
    train = _cifar_batch(folder / "train", b"fine_labels", len(classes))
    return _dataset("cifar100", train, _cifar_batch(folder / "test", b"fine_labels", len(classes)), classes)


# --- image files (Tiny-ImageNet, any image folder) -----------------------------------------------------------------

def _load_tinyimagenet(root: Path) -> ImageDataset:
    """Tiny-ImageNet-200: labels follow the order of wnids.txt; the labelled val split serves as the test split.

    Class names are the first synonym in words.txt (the wnid where words.txt lacks it), made unique by appending
    the wnid to any name that two classes share.
    """
    folder = root / "tiny-imagenet-200"
    annotations = folder / "val" / "val_annotations.txt"
    _require("tinyimagenet", root, [folder / "wnids.txt", folder / "train", annotations])
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        class_dir = folder / "train" / wnid / "images"
        files = sorted(p for p in class_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _missing("tinyimagenet", root, class_dir / "*.JPEG")
        train_files += files
        train_labels += [label_of[wnid]] * len(files)
    test_files, test_labels = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise CorruptDataError(f"{annotations} line {number} does not name an image and a wnid of wnids.txt: "
                                   f"{line!r}")
        test_files.append(folder / "val" / "images" / fields[0])
        test_labels.append(label_of[fields[1]])
    if not test_files:
        raise CorruptDataError(f"{annotations} lists no images")
    _require("tinyimagenet", root, test_files)
    train_images = _decode_images(train_files, force_rgb=True)
    test_images = _decode_images(test_files, force_rgb=True)
    return _dataset("tinyimagenet", (train_images, train_labels), (test_images, test_labels),
                    _tinyimagenet_names(folder / "words.txt", wnids))


def _tinyimagenet_names(words_file: Path, wnids: list[str]) -> list[str]:
    words = {}
    if words_file.is_file():
        for line in words_file.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(wnid) or wnid for wnid in wnids]
    return [f"{name} ({wnid})" if names.count(name) > 1 else name for name, wnid in zip(names, wnids, strict=True)]


def _load_imagefolder(root: Path | None, stream: bool = False, size: int = 0) -> ImageDataset:
    """root/train/<class>/* and root/test/<class>/* (or root/val/<class>/*, the timm/ImageNet name for the held-out
    split); classes are the sorted train subfolders; one image size (or `size`); decoded now or, with `stream`,
    per batch."""
    if root is None:
        raise DataNotFoundError("imagefolder needs root: the folder that holds train/<class>/ and test/<class>/ "
                                "(or val/<class>/): data.root = DIR, or --data-dir DIR")
    held_out = "test" if (root / "test").is_dir() or not (root / "val").is_dir() else "val"
    _require("imagefolder", root, [root / "train", root / held_out])
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise _missing("imagefolder", root, root / "train" / "<class>")
    unknown = sorted(p.name for p in (root / held_out).iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise CorruptDataError(f"{root / held_out} has classes {unknown} that {root / 'train'} lacks; every "
                               f"{held_out} class needs training images")
    splits = []
    for split in ("train", held_out):
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / split / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        if not files:
            raise _missing("imagefolder", root, root / split / "<class>" / "<image>")
        splits.append((files, labels))
    if stream:
        return _streamed_folder(splits, classes, size)
    train_images = _decode_images(splits[0][0], force_rgb=False, size=size)
    test_images = _decode_images(splits[1][0], force_rgb=train_images.shape[1] == 3, size=size)
    if test_images.shape[1] == 3 and train_images.shape[1] == 1:
        train_images = np.repeat(train_images, 3, axis=1)
    if train_images.shape[2:] != test_images.shape[2:]:
        raise CorruptDataError(f"{root / 'train'} images are {train_images.shape[2:]} but {root / held_out} images "
                               f"are {test_images.shape[2:]}: resize them to one size first")
    return _dataset("imagefolder", (train_images, splits[0][1]), (test_images, splits[1][1]), classes)


def _streamed_folder(splits: list[tuple[list[Path], list[int]]], classes: list[str], size: int) -> ImageDataset:
    """An image folder left on disk: RGB if any of a sample of file headers is colour (the rest converted)."""
    from PIL import Image

    files = splits[0][0] + splits[1][0]
    sample = [files[i] for i in np.linspace(0, len(files) - 1, min(len(files), 100)).round().astype(int)]
    rgb = False
    for path in sample:
        with Image.open(path) as image:
            rgb = rgb or image.mode not in _GRAY_MODES
    train, test = (streamed(FolderReader(paths, rgb, size), len(paths)) for paths, _ in splits)
    if train.shape[1:] != test.shape[1:]:
        raise CorruptDataError(f"training images are {tuple(train.shape[2:])} but held-out images are "
                               f"{tuple(test.shape[2:])}: give them one size (data.image_size = N)")
    mean, std = sample_stats(train)
    return ImageDataset(name="imagefolder", train_images=train, train_labels=torch.tensor(splits[0][1]),
                        test_images=test, test_labels=torch.tensor(splits[1][1]), classes=classes, mean=mean, std=std)


class FolderReader:
    """Reads image files the way the in-memory image-folder reader does (gray kept gray unless `rgb`), optionally
    resized to `size` x `size` (shorter side to `size`, then the centre crop). Picklable, for loader workers."""

    def __init__(self, paths: Sequence[Path], rgb: bool, size: int = 0) -> None:
        self.paths, self.rgb, self.size = list(paths), rgb, size

    def __call__(self, i: int) -> torch.Tensor:
        pixels = _decode_one(self.paths[i], str(self.paths[i]), force_rgb=self.rgb, size=self.size)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    def describe(self, i: int) -> str:
        return str(self.paths[i])


_GRAY_MODES = frozenset({"1", "L", "I", "I;16", "F"})


def _decode_one(source: Path | io.BytesIO, name: str, force_rgb: bool, size: int = 0) -> np.ndarray:
    """One image as uint8 [H, W, C] (C = 1 for gray unless `force_rgb`), resized to `size` x `size` if given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            gray = image.mode in _GRAY_MODES and not force_rgb
            image = image.convert("L" if gray else "RGB")
            if size:
                image = _resize_centre(image, size)
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError) as err:
        raise CorruptDataError(f"{name} is not a readable image ({err})") from err
    return pixels[:, :, None] if gray else pixels


def _resize_centre(image: Any, size: int) -> Any:
    """Shorter side to `size` (bilinear, antialiased), then the centre `size` x `size` crop (torchvision's Resize +
    CenterCrop)."""
    from PIL import Image

    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)  # torchvision's rounding, so the pixels match its transforms
    resized = image.resize((size, new_long) if width <= height else (new_long, size), Image.BILINEAR)
    left, top = int(round((resized.size[0] - size) / 2)), int(round((resized.size[1] - size) / 2))
    return resized.crop((left, top, left + size, top + size))


def _decode_images(paths: Sequence[Path | io.BytesIO], force_rgb: bool,
                   names: Sequence[str] | None = None, size: int = 0) -> np.ndarray:
    """Decode images (files, or in-memory files named by `names`) into uint8 [N, C, H, W] (C = 1 if all are
    grayscale and not `force_rgb`, else 3).

    Decoding runs on a thread pool (PIL releases the GIL). Large sets of files are cached in the cache folder,
    keyed by every file's path, size and modification time, so a changed file triggers a fresh decode.
    """
    names = [str(p) for p in paths] if names is None else list(names)
    cache_file = None
    if len(paths) >= DECODE_CACHE_MIN_FILES and all(isinstance(p, Path) for p in paths):
        digest = hashlib.sha1((f"rgb={force_rgb}" + (f",size={size}" if size else "")).encode())
        for path in paths:
            stat = path.stat()
            digest.update(f"{path.absolute()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        cache_file = cache_dir() / "decoded" / f"{digest.hexdigest()[:20]}.npy"
        if cache_file.is_file():
            try:
                return np.load(cache_file)
            except (OSError, ValueError):
                cache_file.unlink(missing_ok=True)  # damaged cache: decode again below
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = list(pool.map(lambda item: _decode_one(*item, force_rgb=force_rgb, size=size),
                                zip(paths, names, strict=True)))
    size = decoded[0].shape[:2]
    for name, pixels in zip(names, decoded, strict=True):
        if pixels.shape[:2] != size:
            raise CorruptDataError(f"images must all have one size: {names[0]} is {size[0]}x{size[1]} but {name} is "
                                   f"{pixels.shape[0]}x{pixels.shape[1]}; resize them first")
    channels = max(pixels.shape[2] for pixels in decoded)
    images = np.stack([np.broadcast_to(pixels, (*size, channels)) for pixels in decoded]).transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images)
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, images)
    return images


def data_fingerprint(dataset: ImageDataset) -> dict:
    """What a checkpoint records of its data, checked when it is used: split sizes, image shape and a hash of the
    labels (cheap to compute, and different for another data set, split or sample order)."""
    digest = hashlib.sha256(dataset.train_labels.numpy().tobytes())
    digest.update(b"|" + dataset.test_labels.numpy().tobytes())
    return {"train_size": len(dataset.train_labels), "test_size": len(dataset.test_labels),
            "image_shape": list(dataset.train_images.shape[1:]), "labels_sha256": digest.hexdigest()[:16]}


__all__ = ["DATASET_NAMES", "ImageDataset", "cache_dir", "channel_stats", "data_fingerprint", "default_data_root",
           "load_dataset"]
