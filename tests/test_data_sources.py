"""Data set readers: real MNIST / Fashion-MNIST / CIFAR-10 / digits, and small files of the standard layouts."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastforget.data import sources
from fastforget.data.sources import ImageDataset, channel_stats, load_dataset
from fastforget.errors import CorruptDataError, DataNotFoundError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


# --- helpers that write the standard layouts -----------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written independently of the reader under test."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(root: Path, folder: str, rng: np.random.Generator, n_train: int = 7, n_test: int = 5,
                  compress: bool = False) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return arrays


def read_idx_oracle(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(shape)


def write_pickle(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_cifar100(root: Path, rng: np.random.Generator) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [f"class_{i}" for i in range(100)]
    names[1] = "aquarium_fish"
    content = {}
    for split, n in (("train", 30), ("test", 12)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        write_pickle(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                                      b"fine_labels": fine, b"coarse_labels": [0] * n, b"data": data})
        content[split] = (data, fine)
    write_pickle(folder / "meta", {b"fine_label_names": [n.encode() for n in names],
                                   b"coarse_label_names": [b"c"] * 20})
    content["names"] = names
    return content


def save_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def decode(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert(mode))


def write_tinyimagenet(root: Path, rng: np.random.Generator, size: int = 16) -> Path:
    folder = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tcrane\n"
                                      "n03\tcrane, bird\n")
    for label, wnid in enumerate(wnids):
        for k in range(3 + label):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            if (label, k) == (1, 0):
                pixels = pixels[:, :, :1]  # one grayscale JPEG, as Tiny-ImageNet has
            save_image(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", pixels)
    lines = []
    for k, wnid in enumerate(["n03", "n02", "n03", "n01"]):
        save_image(folder / "val" / "images" / f"val_{k}.JPEG", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t{size}\t{size}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTFORGET_CACHE", str(cache))
    return cache


# --- real data sets ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cifar10_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cifar-cache")


@pytest.fixture(scope="session")
def cifar10(data_root: Path, cifar10_cache: Path) -> ImageDataset:
    """CIFAR-10 converted once per session from the JPEG archive into a private cache."""
    if not (data_root / "cifar10-jpeg.zip").is_file():
        pytest.skip("cifar10-jpeg.zip is not in the shared data folder")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTFORGET_CACHE", str(cifar10_cache))
        return load_dataset("cifar10", data_root)


def test_mnist_counts_labels_and_pixels(data_root: Path) -> None:
    mnist = load_dataset("mnist", data_root)
    assert (len(mnist.train_images), len(mnist.test_images)) == (60000, 10000)
    assert mnist.train_images.shape[1:] == (1, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.train_images.is_contiguous() and mnist.train_labels.dtype == torch.int64
    assert mnist.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.classes == [str(d) for d in range(10)]
    assert (mnist.num_classes, mnist.in_channels, mnist.image_size) == (10, 1, 28)
    oracle = read_idx_oracle(data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(mnist.test_images[:, 0].numpy(), oracle)
    assert mnist.mean[0] == pytest.approx(0.1307, abs=1e-4) and mnist.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_fashion_mnist_is_balanced(data_root: Path) -> None:
    fashion = load_dataset("Fashion_MNIST", data_root)
    assert fashion.name == "fashion-mnist"
    assert fashion.train_labels.bincount().tolist() == [6000] * 10
    assert fashion.test_labels.bincount().tolist() == [1000] * 10
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    oracle = read_idx_oracle(data_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz")
    assert np.array_equal(fashion.train_labels.numpy(), oracle)


def test_cifar10_from_jpeg_archive(cifar10: ImageDataset, data_root: Path) -> None:
    assert (len(cifar10.train_images), len(cifar10.test_images)) == (50000, 10000)
    assert cifar10.train_images.shape[1:] == (3, 32, 32)
    assert cifar10.train_labels.bincount().tolist() == [5000] * 10
    assert cifar10.test_labels.bincount().tolist() == [1000] * 10
    assert cifar10.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"]
    assert cifar10.mean == pytest.approx((0.491, 0.482, 0.447), abs=0.01)


def test_cifar10_pixels_match_the_source_jpegs(cifar10: ImageDataset, data_root: Path) -> None:
    """Decoding a few archive JPEGs directly must find each exactly once, with its folder's class."""
    with zipfile.ZipFile(data_root / "cifar10-jpeg.zip") as archive:
        for split, images, labels in (("train", cifar10.train_images, cifar10.train_labels),
                                      ("test", cifar10.test_images, cifar10.test_labels)):
            names = sorted(n for n in archive.namelist() if n.startswith(f"{split}/") and n.endswith(".jpg"))
            for name in names[::len(names) // 3]:
                pixels = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                wanted = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
                matches = (images == wanted).flatten(1).all(1).nonzero().flatten()
                assert len(matches) == 1, f"{name} should appear once in the {split} split"
                assert cifar10.classes[labels[matches[0]]] == name.split("/")[1]


def test_cifar10_conversion_is_cached(cifar10: ImageDataset, cifar10_cache: Path, data_root: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load reads the decoded arrays from the cache instead of decoding the archive again."""
    monkeypatch.setenv("FASTFORGET_CACHE", str(cifar10_cache))
    monkeypatch.setattr(sources, "_decode_images", lambda *a, **k: pytest.fail("decoded again"))
    again = load_dataset("cifar10", data_root)
    assert torch.equal(again.train_images, cifar10.train_images) and torch.equal(again.test_labels,
                                                                                  cifar10.test_labels)


def test_digits_split_is_stratified_and_covers_all_samples() -> None:
    from sklearn.datasets import load_digits

    digits = load_dataset("digits")
    original = load_digits()
    assert len(digits.train_images) + len(digits.test_images) == 1797
    assert len(digits.test_images) == 540
    assert digits.train_images.shape[1:] == (1, 8, 8)
    total = np.bincount(original.target)
    assert np.all(np.abs(digits.test_labels.bincount().numpy() - 0.3 * total) <= 1)
    # The split is a permutation of the original samples, scaled 0..16 -> 0..255.
    expected = np.rint(original.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    got = torch.cat([digits.train_images, digits.test_images]).reshape(1797, -1).numpy()
    got_labels = torch.cat([digits.train_labels, digits.test_labels]).numpy()
    order_expected = np.lexsort(np.c_[expected, original.target].T)
    order_got = np.lexsort(np.c_[got, got_labels].T)
    assert np.array_equal(expected[order_expected], got[order_got])
    assert np.array_equal(original.target[order_expected], got_labels[order_got])
    again = load_dataset("digits")
    assert torch.equal(again.train_images, digits.train_images) and torch.equal(again.test_labels, digits.test_labels)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_of_any_size_gzip_or_not(tmp_path: Path, compress: bool) -> None:
    arrays = write_idx_set(tmp_path, "MNIST", np.random.default_rng(), compress=compress)
    mnist = load_dataset("mnist", tmp_path)
    assert np.array_equal(mnist.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(mnist.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"\x00\x00\x08\x04" + data[4:], "magic number"),
    (lambda data: data[:-3], "truncated"),
    (lambda data: b"", "magic number"),
])
def test_corrupt_idx_names_the_file(tmp_path: Path, damage, message: str) -> None:
    write_idx_set(tmp_path, "FashionMNIST", np.random.default_rng())
    bad = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(CorruptDataError, match=message) as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_corrupt_gzip_and_mismatched_counts(tmp_path: Path) -> None:
    write_idx_set(tmp_path, "MNIST", np.random.default_rng(), compress=True)
    raw = tmp_path / "MNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(3, dtype=np.uint8))))
    with pytest.raises(CorruptDataError, match="3 labels") as info:
        load_dataset("mnist", tmp_path)
    assert str(labels) in str(info.value)
    labels.write_bytes(b"this is not gzip data")
    with pytest.raises(CorruptDataError, match="gzip") as info:
        load_dataset("mnist", tmp_path)
    assert str(labels) in str(info.value)


@pytest.mark.parametrize("name, layout", [
    ("mnist", "train-images-idx3-ubyte"), ("fashion-mnist", "FashionMNIST/raw"),
    ("cifar10", "data_batch_1"), ("cifar100", "cifar-100-python"), ("tinyimagenet", "wnids.txt"),
    ("imagefolder", "train/<class>"),
])
def test_missing_data_shows_the_layout(tmp_path: Path, name: str, layout: str) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert layout in message and str(tmp_path) in message and "to get it" in message


def test_unknown_name_and_imagefolder_without_root() -> None:
    with pytest.raises(DataNotFoundError, match="cifar100"):
        load_dataset("svhn")
    with pytest.raises(DataNotFoundError, match="needs root"):
        load_dataset("imagefolder")


def test_root_comes_from_the_environment_unless_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root, explicit_root = tmp_path / "env", tmp_path / "explicit"
    rng = np.random.default_rng()
    write_idx_set(env_root, "MNIST", rng, n_train=3)
    write_idx_set(explicit_root, "MNIST", rng, n_train=4)
    monkeypatch.setenv("FASTFORGET_DATA", str(env_root))
    assert sources.default_data_root() == env_root
    assert len(load_dataset("mnist").train_images) == 3
    assert len(load_dataset("mnist", explicit_root).train_images) == 4


def test_cifar100_layout(tmp_path: Path) -> None:
    content = write_cifar100(tmp_path, np.random.default_rng())
    cifar100 = load_dataset("cifar100", tmp_path)
    assert cifar100.classes == content["names"] and cifar100.num_classes == 100
    data, fine = content["train"]
    assert torch.equal(cifar100.train_images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert cifar100.train_labels.tolist() == fine
    assert cifar100.test_labels.tolist() == content["test"][1]
    image = data[0].reshape(3, 32, 32)  # CIFAR rows hold the red plane, then green, then blue
    assert torch.equal(cifar100.train_images[0, 1], torch.from_numpy(image[1]))


def test_cifar_pickles_cannot_run_code(tmp_path: Path) -> None:
    write_cifar100(tmp_path, np.random.default_rng())
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({b"fine_label_names": Path("x")}))
    with pytest.raises(CorruptDataError, match="refusing") as info:
        load_dataset("cifar100", tmp_path)
    assert str(meta) in str(info.value)


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_malicious_cifar_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    write_cifar100(tmp_path, np.random.default_rng())
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({b"fine_label_names": _RunsACommand(tmp_path / "pwned")}))
    with pytest.raises(CorruptDataError, match=r"refusing to load (posix|os)\.system"):
        load_dataset("cifar100", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_the_jpeg_archive_is_read_in_process_never_by_the_folders_script(
        tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder's converter script is not run (it would leave a marker); the archive is decoded by
    fastforget, in the order that script writes, and the arrays are cached."""
    rng = np.random.default_rng()
    pixels = {}
    with zipfile.ZipFile(tmp_path / "cifar10-jpeg.zip", "w") as archive:
        for split, count in (("train", 2), ("test", 1)):
            for c in range(10):
                for k in range(count):
                    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(image).save(buffer, "PNG")  # lossless, so pixels can be compared exactly
                    name = f"{split}/class{c}/{k:04d}.jpg"
                    archive.writestr(name, buffer.getvalue())
                    pixels[name] = image
    (tmp_path / "cifar10_from_jpeg.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    cifar = load_dataset("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()
    order = np.random.default_rng(sources.CIFAR10_JPEG_SHUFFLE_SEED)
    for split, images, labels in (("train", cifar.train_images, cifar.train_labels),
                                  ("test", cifar.test_images, cifar.test_labels)):
        names = sorted(n for n in pixels if n.startswith(f"{split}/"))
        names = [names[i] for i in order.permutation(len(names))]
        assert [cifar.classes[i] for i in labels] == [n.split("/")[1] for n in names]
        expected = np.stack([pixels[n] for n in names]).transpose(0, 3, 1, 2)
        assert np.array_equal(images.numpy(), expected)
    monkeypatch.setattr(sources, "_decode_images", lambda *a, **k: pytest.fail("decoded again"))
    assert torch.equal(load_dataset("cifar10", tmp_path).train_images, cifar.train_images)


def test_missing_data_hints_name_no_flag_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--root" not in message and "FASTFORGET_DATA" in message


def test_cifar_pickle_with_wrong_entries(tmp_path: Path) -> None:
    write_cifar100(tmp_path, np.random.default_rng())
    train = tmp_path / "cifar-100-python" / "train"
    write_pickle(train, {b"data": np.zeros((2, 100), dtype=np.uint8), b"fine_labels": [0, 1]})
    with pytest.raises(CorruptDataError, match=r"\[N, 3072\]"):
        load_dataset("cifar100", tmp_path)
    write_pickle(train, {b"labels": [0]})
    with pytest.raises(CorruptDataError, match="lacks"):
        load_dataset("cifar100", tmp_path)


def test_tinyimagenet_layout(tmp_path: Path) -> None:
    folder = write_tinyimagenet(tmp_path, np.random.default_rng())
    tiny = load_dataset("tiny-imagenet", tmp_path)
    assert tiny.classes == ["crane (n02)", "goldfish", "crane (n03)"]  # wnids.txt order, shared names made unique
    assert tiny.train_labels.tolist() == [0] * 3 + [1] * 4 + [2] * 5
    assert tiny.test_labels.tolist() == [2, 0, 2, 1]
    assert tiny.train_images.shape == (12, 3, 16, 16)
    gray = decode(folder / "train" / "n01" / "images" / "n01_0.JPEG", "RGB").transpose(2, 0, 1)
    assert torch.equal(tiny.train_images[3], torch.from_numpy(gray.copy()))
    val = decode(folder / "val" / "images" / "val_3.JPEG", "RGB").transpose(2, 0, 1)
    assert torch.equal(tiny.test_images[3], torch.from_numpy(val.copy()))


def test_tinyimagenet_bad_annotation(tmp_path: Path) -> None:
    folder = write_tinyimagenet(tmp_path, np.random.default_rng())
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(CorruptDataError, match="line 1"):
        load_dataset("tinyimagenet", tmp_path)


def test_decoded_images_are_cached_and_refreshed(tmp_path: Path, private_cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "DECODE_CACHE_MIN_FILES", 1)
    folder = write_tinyimagenet(tmp_path, np.random.default_rng())
    first = load_dataset("tinyimagenet", tmp_path)
    assert len(list((private_cache / "decoded").glob("*.npy"))) == 2
    monkeypatch.setattr(sources, "_decode_one", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_dataset("tinyimagenet", tmp_path)
    assert torch.equal(first.train_images, again.train_images) and torch.equal(first.test_images, again.test_images)
    monkeypatch.undo()
    monkeypatch.setenv("FASTFORGET_CACHE", str(private_cache))
    monkeypatch.setattr(sources, "DECODE_CACHE_MIN_FILES", 1)
    changed = folder / "val" / "images" / "val_0.JPEG"
    save_image(changed, np.zeros((16, 16, 3), dtype=np.uint8))
    refreshed = load_dataset("tinyimagenet", tmp_path)
    assert refreshed.test_images[0].max() <= 8 and torch.equal(refreshed.train_images, first.train_images)


def test_imagefolder_rgb_and_gray(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    written = {}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "ant"):
            for k in range(count):
                pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                save_image(tmp_path / "rgb" / split / name / f"{k}.png", pixels)
                save_image(tmp_path / "gray" / split / name / f"{k}.png", pixels[:, :, :1])
                written[split, name, k] = pixels
    rgb = load_dataset("imagefolder", tmp_path / "rgb")
    assert rgb.classes == ["ant", "cat"] and rgb.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert rgb.image_shape == (6, 5) and rgb.in_channels == 3
    assert torch.equal(rgb.test_images[3], torch.from_numpy(written["test", "cat", 1].transpose(2, 0, 1).copy()))
    gray = load_dataset("imagefolder", tmp_path / "gray")
    assert gray.in_channels == 1 and len(gray.mean) == 1
    assert torch.equal(gray.train_images[0, 0], torch.from_numpy(written["train", "ant", 0][:, :, 0]))
    with pytest.raises(ValueError, match="non-square"):
        _ = rgb.image_size


def test_imagefolder_needs_one_image_size(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4, 3), dtype=np.uint8))
    save_image(tmp_path / "train" / "a" / "1.png", np.zeros((5, 4, 3), dtype=np.uint8))
    save_image(tmp_path / "test" / "a" / "0.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(CorruptDataError, match="one size") as info:
        load_dataset("imagefolder", tmp_path)
    assert "1.png" in str(info.value)


def test_channel_stats_against_numpy() -> None:
    rng = np.random.default_rng()
    images = rng.integers(0, 256, (17, 3, 5, 7), dtype=np.uint8)
    images[:, 2] //= 4
    mean, std = channel_stats(torch.from_numpy(images))
    values = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    assert mean == pytest.approx(values.mean(1), abs=1e-4) and std == pytest.approx(values.std(1), abs=1e-4)


def test_image_dataset_validates_and_summarises() -> None:
    images, labels = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    dataset = ImageDataset("toy", images, labels, images[:2], labels[:2], ["a", "b"], (0.5,) * 3, (0.2,) * 3)
    assert repr(dataset) == "ImageDataset(name='toy', train=4, test=2, image=3x2x2, classes=2)"
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("toy", images.float(), labels, images, labels, ["a"], (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="int64"):
        ImageDataset("toy", images, labels[:3], images, labels, ["a"], (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="one value per channel"):
        ImageDataset("toy", images, labels, images, labels, ["a"], (0.5,), (0.2,))
