"""The figures (titles, safe file names, grouped reassignment and accuracy-drop charts) and the per-sample .npz."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from fastforget.data import ImageDataset
from fastforget.evaluate import Outputs, save_per_sample, write_plots
from fastforget.io import safe_name
from fastforget.metrics.plots import plot_accuracy_drop, plot_where_it_goes
from fastforget.metrics.reassignment import ClassShare, Reassigned

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress"]


def _dataset(n: int = 40) -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = lambda: torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=generator)  # noqa: E731
    labels = torch.arange(n) % len(CLASSES)
    return ImageDataset("fashion-like", images(), labels, images(), labels.clone(), CLASSES, (0.5,), (0.25,))


def _outputs(dataset: ImageDataset, seed: int) -> Outputs:
    generator = torch.Generator().manual_seed(seed)
    n, k = len(dataset.train_labels), len(CLASSES)
    return Outputs(train=torch.randn(n, k, generator=generator), test=torch.randn(n, k, generator=generator),
                   train_rows=torch.arange(n))


def test_plots_stay_in_their_folder_whatever_the_class_names(tmp_path):
    dataset = _dataset()
    paths = write_plots(tmp_path / "plots", dataset, [0], _outputs(dataset, 1), original=_outputs(dataset, 2),
                        retrained=_outputs(dataset, 3), method="rwft-2-o")
    assert {p.name for p in paths} == {"confusion.png", "reassignment_T-shirt_top.png", "accuracy_drop.png"}
    for path in paths:
        assert path.parent == tmp_path / "plots" and matplotlib.image.imread(path).ndim == 3
    assert safe_name("T-shirt/top") == "T-shirt_top" and safe_name("rwft-o+mix") == "rwft-o+mix"
    assert safe_name("../..") == "_"


def test_grouped_charts_need_one_forgotten_class(tmp_path):
    one = Reassigned(1, 10, [ClassShare(2, 0.7), ClassShare(3, 0.3)])
    other = Reassigned(2, 10, [ClassShare(1, 1.0)])
    path = plot_where_it_goes({"rwft-2-o": one, "retrained": Reassigned(1, 10, [ClassShare(3, 1.0)])},
                              tmp_path / "where.png", class_names=CLASSES)
    assert matplotlib.image.imread(path).ndim == 3
    with pytest.raises(ValueError, match="one forgotten class"):
        plot_where_it_goes({"a": one, "b": other}, tmp_path / "bad.png", class_names=CLASSES)
    drop = plot_accuracy_drop({"rwft-2-o": [(0, 2.5), (2, -1.0)], "retrained": [(0, 0.5)]}, tmp_path / "drop.png",
                              class_names=CLASSES)
    assert matplotlib.image.imread(drop).ndim == 3


def test_per_sample_file_holds_what_the_metrics_saw(tmp_path):
    dataset = _dataset()
    unlearned, original = _outputs(dataset, 1), _outputs(dataset, 2)
    path = save_per_sample(tmp_path / "samples.npz", dataset, [0], unlearned, original=original,
                           retrained=[_outputs(dataset, 3)], nearest=2)
    saved = np.load(path)
    np.testing.assert_array_equal(saved["unlearned_test_logits"], unlearned.test.numpy())
    np.testing.assert_array_equal(saved["unlearned_train_labels"], dataset.train_labels.numpy())
    probs = np.exp(original.train.double().numpy())
    probs /= probs.sum(1, keepdims=True)
    labels = dataset.train_labels.numpy()
    # the metrics' own probabilities are float32 softmax: within float32 rounding of the float64 oracle
    np.testing.assert_allclose(saved["original_train_mia"], probs[np.arange(len(labels)), labels], rtol=1e-5)
    np.testing.assert_allclose(saved["original_train_mia_nn"], probs[:, 2], rtol=1e-5)
    assert "retrained0_test_logits" in saved and list(saved["classes"]) == CLASSES and int(saved["mia_nn_class"]) == 2


def test_tensorboard_curves_hold_the_loop_losses(tmp_path, monkeypatch):
    """Curves are written at the loop's read interval only: with one read (at the end), the point is the run's
    mean loss; two runs of one name get distinct tags."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import fastforget.train as train_module
    from fastforget import curves
    from fastforget.data import InMemoryLoader
    from fastforget.train import Batch, SGDSpec, fit

    monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", 1e9)
    dataset = _dataset(64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, len(CLASSES)))
    losses = []

    def loss_fn(net, batch: Batch, _progress):
        logits = net(batch.images)
        loss = torch.nn.functional.cross_entropy(logits, batch.labels)
        losses.append(loss.item())
        return loss, logits

    loader = InMemoryLoader(dataset.train_images, dataset.train_labels, batch_size=16, shuffle=True,
                            mean=dataset.mean, std=dataset.std, device=torch.device("cpu"))
    with curves.tensorboard(tmp_path / "tb"):
        stats = fit(model, loader, loss_fn, epochs=2, sgd=SGDSpec(lr=0.1), desc="demo")
        fit(model, loader, loss_fn, epochs=1, sgd=SGDSpec(lr=0.1), desc="demo")
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"demo/loss", "demo/accuracy", "demo#2/loss"} <= set(events.Tags()["scalars"])
    (point,) = events.Scalars("demo/loss")
    assert point.step == stats.steps == 8
    assert point.value == pytest.approx(np.mean(losses[:8]), rel=1e-5) == pytest.approx(stats.final_loss, rel=1e-5)
    assert not curves.active()
