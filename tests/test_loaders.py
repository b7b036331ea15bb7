"""In-memory and FFCV loaders: exact pixels, real augmentation, repeatable epochs, and the two loaders agreeing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastforget.data import Augment, InMemoryLoader, epoch_order
from fastforget.data import ffcv as ffcv_module
from fastforget.errors import DataNotFoundError


def random_images(n: int, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng()
    images = torch.from_numpy(rng.integers(0, 256, (n, channels, height, width), dtype=np.uint8))
    return images, torch.from_numpy(rng.integers(0, 5, n))


def normalised_oracle(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float64).view(shape)
    std_t = torch.tensor(std, dtype=torch.float64).view(shape)
    return (images.double() / 255 - mean_t) / std_t


def collect(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return tuple(torch.cat([b[k] for b in batches]) for k in range(3))


def stats(channels: int) -> dict:
    return {"mean": tuple(np.linspace(0.3, 0.6, channels)), "std": tuple(np.linspace(0.2, 0.3, channels))}


@pytest.mark.parametrize("channels, height, width, batch_size, drop_last", [
    (3, 7, 9, 10, False), (1, 28, 28, 16, True), (3, 5, 5, 200, False),
])
def test_without_augmentation_returns_the_normalised_source(channels: int, height: int, width: int,
                                                            batch_size: int, drop_last: bool) -> None:
    images, labels = random_images(103, channels, height, width)
    loader = InMemoryLoader(images, labels, batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=5,
                            **stats(channels))
    expected_batches = 103 // batch_size if drop_last else -(-103 // batch_size)
    assert len(loader) == expected_batches
    batches = list(loader)
    assert len(batches) == expected_batches
    for x, y, idx in batches:
        assert x.shape == (len(idx), channels, height, width) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == idx.dtype == torch.int64
        assert torch.equal(y, labels[idx])
        torch.testing.assert_close(x.double(), normalised_oracle(images[idx], **stats(channels)), atol=1e-5, rtol=0)
    seen = torch.cat([b[2] for b in batches])
    assert len(set(seen.tolist())) == len(seen)
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(103))
        assert seen.tolist() != list(range(103)), "shuffle=True should shuffle"


def test_subset_order_without_shuffle_and_bfloat16() -> None:
    images, labels = random_images(50, 3, 4, 4)
    subset = torch.tensor([7, 3, 49, 0, 3, 12])
    loader = InMemoryLoader(images, labels, batch_size=4, shuffle=False, indices=subset, dtype=torch.bfloat16,
                            **stats(3))
    x, y, idx = collect(loader)
    assert idx.tolist() == subset.tolist() and x.dtype == torch.bfloat16
    torch.testing.assert_close(x.double(), normalised_oracle(images[subset], **stats(3)), atol=0.02, rtol=0.01)


def test_epochs_repeat_from_the_seed_and_differ_between_epochs() -> None:
    images, labels = random_images(64, 3, 6, 6)
    make = lambda seed: InMemoryLoader(images, labels, batch_size=8, augment=Augment(2, True), seed=seed,  # noqa: E731
                                       **stats(3))
    first, second = make(11), make(11)
    epoch0, epoch1 = collect(first), collect(first)
    again0 = collect(second)
    assert all(torch.equal(a, b) for a, b in zip(epoch0, again0, strict=True))
    assert not torch.equal(epoch0[2], epoch1[2])
    assert not torch.equal(collect(make(12))[2], epoch0[2])
    assert epoch0[2].tolist() == epoch_order(np.arange(64), shuffle=True, seed=11, epoch=0).tolist()


def candidate_views(image: np.ndarray, padding: int, flip: bool) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every crop of the zero-padded image (as HWC), then flipped or not: made by hand with numpy."""
    channels, height, width = image.shape
    padded = np.zeros((channels, height + 2 * padding, width + 2 * padding), dtype=image.dtype)
    padded[:, padding:padding + height, padding:padding + width] = image
    views = {}
    for dy in range(-padding, padding + 1):
        for dx in range(-padding, padding + 1):
            crop = padded[:, padding + dy:padding + dy + height, padding + dx:padding + dx + width]
            for flipped in ((False, True) if flip else (False,)):
                views[dy, dx, flipped] = crop[:, :, ::-1] if flipped else crop
    return views


@pytest.mark.parametrize("augment", [Augment(crop_padding=3, flip=True), Augment(crop_padding=2),
                                     Augment(flip=True)])
def test_augmented_samples_are_real_crops_and_flips(augment: Augment) -> None:
    channels, height, width = 3, 8, 7
    images, labels = random_images(600, channels, height, width)
    loader = InMemoryLoader(images, labels, batch_size=128, augment=augment, seed=3, mean=(0.0,) * 3,
                            std=(1.0,) * 3)
    x, _, idx = collect(loader)
    pixels = (x.double() * 255).round().to(torch.uint8).numpy()
    found = []
    for k in range(len(idx)):
        views = candidate_views(images[idx[k]].numpy(), augment.crop_padding, augment.flip)
        matches = [key for key, view in views.items() if np.array_equal(view, pixels[k])]
        assert len(matches) == 1, f"sample {k} is not exactly one crop/flip of its source"
        found.append(matches[0])
    shifts = {(dy, dx) for dy, dx, _ in found}
    flips = np.mean([flipped for _, _, flipped in found])
    p = augment.crop_padding
    assert len(shifts) == (2 * p + 1) ** 2, "every shift in [-p, p]^2 should occur over 600 samples"
    if augment.flip:
        assert 0.4 < flips < 0.6
    else:
        assert flips == 0


def test_hand_made_crop_of_one_sample() -> None:
    """A sample whose drawn shift is (dy, dx) equals the source shifted by hand with zeros filled in."""
    image = torch.arange(1, 26, dtype=torch.uint8).reshape(1, 1, 5, 5).repeat(1, 3, 1, 1)
    loader = InMemoryLoader(image, torch.zeros(1, dtype=torch.int64), batch_size=1, augment=Augment(2, False),
                            seed=0, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    generator = torch.Generator().manual_seed(0)  # the draw the loader's first epoch makes
    dy, dx = torch.randint(-2, 3, (1, 2), generator=generator)[0].tolist()
    (x, _, _), = list(loader)
    expected = np.zeros((5, 5), dtype=np.float64)
    source = image[0, 0].numpy()
    for row in range(5):
        for col in range(5):
            if 0 <= row + dy < 5 and 0 <= col + dx < 5:
                expected[row, col] = source[row + dy, col + dx]
    assert np.array_equal(x[0, 1].double().numpy(), expected)


def test_images_on_the_device_are_shared_not_copied() -> None:
    images, labels = random_images(10, 3, 4, 4)
    loader = InMemoryLoader(images, labels, batch_size=4, **stats(3))
    assert loader.images.data_ptr() == images.data_ptr()


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"indices": [0, 99]}, r"\[0, 10\)"),
    ({"indices": torch.ones(10, dtype=torch.bool)}, "integer positions"),
    ({"mean": (0.5,)}, "one per channel"),
    ({"std": (0.2, 0.0, 0.2)}, "positive"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    images, labels = random_images(10, 3, 4, 4)
    args = {"batch_size": 4, **stats(3), **kwargs}
    with pytest.raises(ValueError, match=message):
        InMemoryLoader(images, labels, **args)
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)


# --- FFCV ----------------------------------------------------------------------------------------------------------

requires_ffcv = pytest.mark.skipif(not ffcv_module.ffcv_available(),
                                   reason="FFCV is not importable here; install it as docs/FFCV_INSTALL.md says")


def test_importing_fastforget_data_does_not_import_ffcv() -> None:
    code = "import sys, fastforget.data; assert 'ffcv' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_without_ffcv_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffcv_module, "_import_error", lambda: "ModuleNotFoundError: No module named 'ffcv'")
    assert not ffcv_module.ffcv_available()
    images, labels = random_images(4, 3, 4, 4)
    with pytest.raises(ffcv_module.FFCVUnavailableError, match="pip install ffcv==1.0.2"):
        ffcv_module.write_beton(images, labels, tmp_path / "x.beton")


@pytest.fixture(scope="module")
def betons(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Small RGB (non-square) and grayscale data sets written once for the FFCV tests."""
    if not ffcv_module.ffcv_available():
        pytest.skip("FFCV is not importable here")
    folder = tmp_path_factory.mktemp("betons")
    written = {}
    for name, shape in (("rgb", (3, 12, 10)), ("gray", (1, 9, 9))):
        images, labels = random_images(237, *shape)
        written[name] = (ffcv_module.write_beton(images, labels, folder / f"{name}.beton"), images, labels)
    return written


@requires_ffcv
@pytest.mark.parametrize("name", ["rgb", "gray"])
def test_ffcv_matches_in_memory_without_augmentation(betons: dict, name: str) -> None:
    path, images, labels = betons[name]
    assert [p.name for p in path.parent.iterdir() if name in p.name] == [f"{name}.beton"], "no temp file left"
    subset = torch.from_numpy(np.random.default_rng().permutation(237)[:150])
    options = {"batch_size": 32, "shuffle": False, "indices": subset, **stats(images.shape[1])}
    with ffcv_module.ffcv_loader(path, **options) as loader:
        assert len(loader) == 5
        x, y, idx = collect(loader)
    assert idx.tolist() == subset.tolist() and torch.equal(y, labels[subset])
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.double(), normalised_oracle(images[subset], **stats(images.shape[1])),
                               atol=1e-5, rtol=0)


@requires_ffcv
def test_ffcv_gives_the_in_memory_batches_for_the_same_seed(betons: dict) -> None:
    path, images, labels = betons["rgb"]
    options = {"batch_size": 50, "shuffle": True, "augment": Augment(crop_padding=2, flip=True), "seed": 7,
               "drop_last": True, "indices": torch.arange(0, 237, 2), **stats(3)}
    reference = InMemoryLoader(images, labels, **options)
    with ffcv_module.ffcv_loader(path, **options) as loader:
        assert len(loader) == len(reference) == 2
        for _ in range(2):  # two epochs: the order and the augmentation move on in step
            for got, want in zip(loader, reference, strict=True):
                assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@requires_ffcv
def test_ffcv_leaves_torch_thread_count_alone(betons: dict) -> None:
    """FFCV sets torch's thread count to its worker count; the loader puts the caller's back (a changed count
    changes the model's arithmetic, so runs through FFCV and through memory would differ)."""
    path, _, _ = betons["gray"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with ffcv_module.ffcv_loader(path, batch_size=10, num_workers=2, **stats(1)) as loader:
            assert torch.get_num_threads() == 1
            for _ in loader:
                assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@requires_ffcv
def test_ffcv_half_used_pass_is_closed(betons: dict) -> None:
    path, images, _ = betons["gray"]
    loader = ffcv_module.ffcv_loader(path, batch_size=10, **stats(1))
    first = next(iter(loader))
    assert first[0].shape == (10, 1, 9, 9)
    passes = iter(loader)
    next(passes)
    assert len(loader._open) == 1
    loader.close()
    assert not loader._open


@requires_ffcv
def test_prepare_writes_train_and_test(tmp_path: Path) -> None:
    from fastforget.data import load_dataset

    digits = load_dataset("digits")
    paths = ffcv_module.prepare(digits, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {"train": "train.beton", "test": "test.beton"}
    with ffcv_module.ffcv_loader(paths["test"], batch_size=1000, shuffle=False, mean=digits.mean,
                                 std=digits.std) as loader:
        x, y, idx = collect(loader)
    assert torch.equal(y, digits.test_labels) and idx.tolist() == list(range(len(digits.test_labels)))
    torch.testing.assert_close(x.double(), normalised_oracle(digits.test_images, digits.mean, digits.std),
                               atol=1e-5, rtol=0)


@requires_ffcv
def test_bad_beton_arguments(tmp_path: Path, betons: dict) -> None:
    images, labels = random_images(4, 2, 4, 4)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        ffcv_module.write_beton(images, labels, tmp_path / "x.beton")
    assert not list(tmp_path.iterdir())
    with pytest.raises(DataNotFoundError, match="data prepare"):
        ffcv_module.ffcv_loader(tmp_path / "x.beton", batch_size=4, **stats(3))
    with pytest.raises(ValueError, match="one per channel"):
        ffcv_module.ffcv_loader(betons["gray"][0], batch_size=4, **stats(3))
