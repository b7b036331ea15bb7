"""Streamed data (`data.loader = "stream"`): image folders and torch Datasets left on disk, decoded per batch.

The oracle throughout is the in-memory path over the same files: the streamed loader must give the same batches
(order, augmentation, normalisation) bit for bit, so training, unlearning and evaluation give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import fastforget  # the CLI in this process, output captured

from fastforget import api
from fastforget.data import Augment, InMemoryLoader, StreamedImages, StreamLoader, load_dataset
from fastforget.data.sources import FolderReader
from fastforget.data.user import as_image_dataset
from fastforget.distributed import Shard
from fastforget.errors import CorruptDataError, DataError, DataNotFoundError
from fastforget.inference import predict_logits
from fastforget.models import build_model


def write_folder(root: Path, *, classes: int = 3, train: int = 9, test: int = 4, size: tuple[int, int] = (10, 10),
                 rgb: bool = True, held_out: str = "val") -> dict[tuple[str, str, int], np.ndarray]:
    """An image folder of random PNGs (train/<class>/ and `held_out`/<class>/); returns the pixels written."""
    rng = np.random.default_rng()
    written = {}
    for split, count in (("train", train), (held_out, test)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (*size, 3) if rgb else size, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{k:03d}.png")
                written[split, f"c{c}", k] = pixels
    return written


def batches(loader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in batch) for batch in loader]


def assert_same_batches(left, right) -> None:
    assert len(left) == len(right) > 0
    for a, b in zip(left, right, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_a_streamed_folder_reads_nothing_but_its_statistics_sample(tmp_path, monkeypatch):
    write_folder(tmp_path, train=7, test=3)
    reads = []
    original_call = FolderReader.__call__
    monkeypatch.setattr(FolderReader, "__call__", lambda self, i: reads.append(i) or original_call(self, i))
    data = load_dataset("imagefolder", tmp_path, stream=True)
    assert data.streamed and isinstance(data.train_images, StreamedImages)
    assert data.train_images.shape == (21, 3, 10, 10) and data.test_images.shape == (9, 3, 10, 10)
    # the first image of each split (its shape) and the statistics sample (all 21 here); no held-out pixels
    assert len(reads) == 2 + 21
    memory = load_dataset("imagefolder", tmp_path)
    assert data.mean == memory.mean and data.std == memory.std
    assert torch.equal(data.train_labels, memory.train_labels) and data.classes == memory.classes
    subset = data.train_images[torch.tensor([20, 0, 5])]
    assert len(subset) == 3 and len(reads) == 23  # selecting reads nothing
    assert torch.equal(subset.decode([0, 1, 2]), memory.train_images[[20, 0, 5]])
    mask = data.train_labels == 1
    assert torch.equal(data.train_images[mask].decode(range(7)), memory.train_images[mask])


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_loader_gives_the_in_memory_batches(tmp_path, workers):
    """Same order, crop, flip and normalisation for the same seed, over two epochs, on a subset, with worker
    processes decoding; also one rank's share of a two-rank global batch."""
    write_folder(tmp_path, train=11, test=2, size=(9, 7))
    streamed, memory = load_dataset("imagefolder", tmp_path, stream=True), load_dataset("imagefolder", tmp_path)
    indices = torch.randperm(33)[:25]
    for shard, batch_size in ((Shard(), 6), (Shard(rank=1, world=2), 8)):
        options = dict(batch_size=batch_size, shuffle=True, augment=Augment(crop_padding=2, flip=True),
                       mean=memory.mean, std=memory.std, seed=int(torch.randint(0, 1000, ())), indices=indices,
                       shard=shard)
        stream = StreamLoader(streamed.train_images, streamed.train_labels, workers=workers, **options)
        reference = InMemoryLoader(memory.train_images, memory.train_labels, **options)
        assert len(stream) == len(reference)
        for _ in range(2):
            assert_same_batches(batches(stream), batches(reference))


def test_streamed_predictions_equal_in_memory_ones(tmp_path):
    write_folder(tmp_path, classes=2, train=5, test=5, size=(12, 12), rgb=False)
    streamed, memory = load_dataset("imagefolder", tmp_path, stream=True), load_dataset("imagefolder", tmp_path)
    assert streamed.in_channels == memory.in_channels == 1
    model = build_model("cnn", 2, in_channels=1, width=4).eval()
    for split in ("train_images", "test_images"):
        expected = predict_logits(model, getattr(memory, split), memory, batch_size=3)
        assert torch.equal(predict_logits(model, getattr(streamed, split), streamed, batch_size=3), expected)


def test_train_unlearn_eval_streamed_match_the_in_memory_run(tmp_path, monkeypatch):
    """The command line with data.loader=stream gives the in-memory run's model and report, bit for bit."""
    passes = []
    stream_iter = StreamLoader.__iter__
    monkeypatch.setattr(StreamLoader, "__iter__", lambda self: passes.append(len(self)) or stream_iter(self))
    write_folder(tmp_path / "images", classes=3, train=12, test=6, size=(8, 8))
    common = ["--set", "data.name=imagefolder", f"data.root={tmp_path / 'images'}", "train.epochs=2",
              "model.width=4", "data.crop_padding=1", "data.flip=true"]
    reports = {}
    for kind in ("memory", "stream"):
        run = tmp_path / kind
        trained = fastforget("train", *common, f"data.loader={kind}", "--out", run / "original")
        assert trained.code == 0, trained.err
        unlearned = fastforget("unlearn", "--checkpoint", run / "original", "--method", "rwft-2-o", "--forget", "c1",
                               "--hp", "epochs=2", "--set", f"data.loader={kind}", "--out", run / "unlearned")
        assert unlearned.code == 0, unlearned.err
        report = fastforget("eval", "--checkpoint", run / "unlearned", "--original", run / "original",
                            "--metrics", "accuracy,mia_nn", "--set", f"data.loader={kind}", "--json", run / "r.json")
        assert report.code == 0, report.err
        reports[kind] = json.loads((run / "r.json").read_text())
        assert bool(passes) == (kind == "stream")  # training, unlearning and inference passes all streamed
    from fastforget.checkpoint import load_checkpoint

    for name in ("original", "unlearned"):
        memory, _ = load_checkpoint(tmp_path / "memory" / name)
        stream, _ = load_checkpoint(tmp_path / "stream" / name)
        for key, value in memory.state_dict().items():
            assert torch.equal(value, stream.state_dict()[key]), (name, key)
    for key in ("acc_r_test", "acc_f_test", "acc_r_train", "acc_f_train", "mia_nn"):
        assert reports["stream"][key] == reports["memory"][key], key


def test_image_size_resizes_like_torchvision(tmp_path):
    """Mixed sizes need data.image_size; the pixels are torchvision's Resize(N) + CenterCrop(N)."""
    from torchvision.transforms import CenterCrop, Compose, PILToTensor, Resize

    rng = np.random.default_rng()
    sizes = [(13, 9), (9, 13), (20, 20), (7, 30)]
    for split in ("train", "test"):
        for k, (h, w) in enumerate(sizes):
            (tmp_path / split / "a").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / split / "a" / f"{k}.png")
    with pytest.raises(Exception, match="one size"):
        load_dataset("imagefolder", tmp_path)
    oracle = Compose([Resize(8), CenterCrop(8), PILToTensor()])
    expected = torch.stack([oracle(Image.open(tmp_path / "train" / "a" / f"{k}.png")) for k in range(len(sizes))])
    memory = load_dataset("imagefolder", tmp_path, image_size=8)
    streamed = load_dataset("imagefolder", tmp_path, stream=True, image_size=8)
    assert torch.equal(memory.train_images, expected)
    assert torch.equal(streamed.train_images.decode(range(len(sizes))), expected)


def test_a_torch_dataset_streamed(tmp_path, monkeypatch):
    """torchvision's ImageFolder as given, left unread (labels from .targets); the batches of the in-memory path."""
    from torchvision.datasets import ImageFolder

    write_folder(tmp_path, classes=2, train=6, test=3, size=(6, 6))
    train, val = ImageFolder(tmp_path / "train"), ImageFolder(tmp_path / "val")
    loads = []
    original_getitem = ImageFolder.__getitem__
    monkeypatch.setattr(ImageFolder, "__getitem__", lambda self, i: loads.append(i) or original_getitem(self, i))
    streamed = as_image_dataset(train, val, stream=True)
    assert streamed.streamed and streamed.classes == ["c0", "c1"]
    assert len(loads) == 2 + 12  # each split's first image, and the statistics sample (all 12 training images)
    memory = as_image_dataset(train, val)
    assert streamed.mean == memory.mean and torch.equal(streamed.train_labels, memory.train_labels)
    options = dict(batch_size=5, augment=Augment(crop_padding=1), mean=memory.mean, std=memory.std, seed=3)
    assert_same_batches(batches(StreamLoader(streamed.train_images, streamed.train_labels, workers=1, **options)),
                        batches(InMemoryLoader(memory.train_images, memory.train_labels, **options)))
    monkeypatch.undo()
    model = build_model("cnn", 2, in_channels=3, width=4).eval()
    passes, stream_iter = [], StreamLoader.__iter__
    monkeypatch.setattr(StreamLoader, "__iter__", lambda self: passes.append(len(self)) or stream_iter(self))
    reports = [api.evaluate(model, train, ["c1"], test_data=val, metrics=["accuracy"], overrides=overrides)
               for overrides in ([], ["data.loader=stream"])]
    assert len(passes) == 2  # the streamed evaluation's train and test passes
    for key in ("acc_r_test", "acc_f_test", "acc_r_train", "acc_f_train"):
        assert reports[1][key] == reports[0][key], key


def test_streaming_errors_are_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="for image folders.*data.loader = 'memory'"):
        load_dataset("digits", stream=True)
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match="tensors are in memory already"):
        as_image_dataset((images, torch.arange(4) % 2), (images, torch.arange(4) % 2), stream=True)
    write_folder(tmp_path, classes=1, train=2, test=1, size=(5, 5))
    Image.fromarray(np.zeros((6, 5, 3), dtype=np.uint8)).save(tmp_path / "train" / "c0" / "001.png")
    with pytest.raises(CorruptDataError, match="001.png is 3x6x5, not 3x5x5.*data.image_size"):
        load_dataset("imagefolder", tmp_path, stream=True)  # found by the statistics sample
    data = load_dataset("imagefolder", tmp_path, stream=True, image_size=5)
    assert data.train_images.decode([1]).shape == (1, 3, 5, 5)
    result = fastforget("train", "--set", "data.name=digits", "data.loader=stream", "--out", tmp_path / "x")
    assert result.code == 2 and "Traceback" not in result.err and "image folders" in result.err
