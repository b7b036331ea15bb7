"""The shared training loop and the recipe: accuracy, exclusion, repeatability, clear failures."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import DIGITS_FORGET

import fastforget.data.factory as factory
import fastforget.train as train_module
from fastforget.config import load_config
from fastforget.data import load_dataset
from fastforget.errors import TrainingDivergedError
from fastforget.models import build_model
from fastforget.train import Batch, ExecSpec, SGDSpec, fit, lr_lambda, train_model

FP32 = ExecSpec(amp=False)


def test_digits_model_trains_to_90_percent(digits_original):
    assert digits_original.meta["test_accuracy"] >= 90.0
    assert digits_original.meta["label_smoothing"] == 0.0
    assert {"arch", "dataset", "classes", "excluded", "seed", "test_accuracy", "versions"} <= set(digits_original.meta)


def test_retrained_model_never_sees_the_excluded_class(monkeypatch, digits_cfg):
    seen = []

    class RecordingLoader(factory.InMemoryLoader):
        def __iter__(self):
            for images, labels, indices in super().__iter__():
                seen.append(labels.clone())
                yield images, labels, indices

    monkeypatch.setattr(factory, "InMemoryLoader", RecordingLoader)
    trained = train_model(digits_cfg, exclude=[str(c) for c in DIGITS_FORGET], epochs=2)
    labels = torch.cat(seen)
    assert len(labels) > 0 and not torch.isin(labels, torch.tensor(DIGITS_FORGET)).any()
    assert trained.meta["excluded"] == DIGITS_FORGET
    dataset = load_dataset("digits")
    assert trained.meta["train_size"] == int((~torch.isin(dataset.train_labels, torch.tensor(DIGITS_FORGET))).sum())


def test_training_is_repeatable_for_a_seed():
    cfg = load_config("digits", ["train.epochs=1", "model.width=8"])
    a, b = train_model(cfg, seed=5), train_model(cfg, seed=5)
    c = train_model(cfg, seed=6)
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert any(not torch.equal(x, z) for x, z in zip(a.model.state_dict().values(), c.model.state_dict().values(),
                                                       strict=True))


def _tiny_loader(n=32, batch=8):
    images = torch.randn(n, 1, 8, 8)
    labels = torch.randint(0, 10, (n,))
    return [(images[i:i + batch], labels[i:i + batch], torch.arange(i, i + batch)) for i in range(0, n, batch)]


def test_nan_loss_is_a_clear_error():
    model = build_model("cnn", 10, 1, width=4)

    def exploding(net, batch: Batch, progress):
        return net(batch.images).sum() * float("nan"), None

    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        fit(model, _tiny_loader(), exploding, epochs=1, sgd=SGDSpec(lr=0.1), execution=FP32)


def test_grad_masks_keep_masked_weights_bit_identical_with_decay_and_momentum():
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {p: (torch.rand_like(p) > 0.5).float() for p in model.parameters()}

    def ce(net, batch, progress):
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels), logits

    fit(model, _tiny_loader(), ce, epochs=3, sgd=SGDSpec(lr=0.1, weight_decay=5e-4, momentum=0.9), execution=FP32,
        grad_masks=masks)
    for name, p in model.named_parameters():
        mask = masks[p].bool()
        assert torch.equal(p[~mask], before[name][~mask]), name
        assert not mask.any() or not torch.equal(p[mask], before[name][mask]), name


def test_frozen_parameters_and_flags_are_restored():
    model = build_model("cnn", 10, 1, width=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def ce(net, batch, progress):
        return F.cross_entropy(net(batch.images), batch.labels), None

    fit(model, _tiny_loader(), ce, epochs=1, sgd=SGDSpec(lr=0.1), params=list(model.fc.parameters()), execution=FP32,
        freeze_bn=True)
    for name, p in model.named_parameters():
        assert p.requires_grad
        assert torch.equal(p, before[name]) != name.startswith("fc."), name


def test_schedules():
    step = lr_lambda("step", total_steps=100, steps_per_epoch=10, step_size=4, gamma=0.1)
    assert [step(s) for s in (0, 39, 40, 80)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.01)]
    cycle = lr_lambda("onecycle", 100, 10, 0, 0)
    assert cycle(0) == pytest.approx(0.1) and cycle(15) == pytest.approx(1.0) and cycle(100) == 0.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_lambda("cosine", 1, 1, 1, 1)


def test_ffcv_config_feeds_training_the_same_batches_as_memory(tmp_path, monkeypatch):
    from fastforget.data.ffcv import ffcv_available

    if not ffcv_available():
        pytest.skip("ffcv is not installed (scripts/setup.sh installs it where apt is available)")
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path))
    dataset = load_dataset("digits")
    batches = {}
    for kind in ("memory", "ffcv"):
        cfg = load_config("digits", [f"data.loader={kind}", "data.crop_padding=1", "data.flip=true"])
        loader = factory.make_train_loader(dataset, cfg, indices=torch.arange(0, 1257, 3), batch_size=32,
                                                device=torch.device("cpu"), seed=7)
        batches[kind] = [tuple(t.clone() for t in batch) for _ in range(2) for batch in loader]
    assert list(tmp_path.glob("ffcv/digits-*/train.beton"))
    assert len(batches["memory"]) == len(batches["ffcv"]) == 2 * (419 // 32)
    for mem, ffc in zip(batches["memory"], batches["ffcv"], strict=True):
        for a, b in zip(mem, ffc, strict=True):
            assert torch.equal(a, b)
    trained = train_model(load_config("digits", ["train.epochs=3", "model.width=8", "data.loader=ffcv"]), seed=3)
    assert trained.meta["test_accuracy"] > 50


def test_missing_ffcv_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(factory, "ffcv_available", lambda: False)
    with pytest.warns(UserWarning, match="FFCV is not installed"):
        train_model(load_config("digits", ["train.epochs=1", "model.width=8", "data.loader=ffcv"]))
    with pytest.raises(Exception, match="data.loader must be"):
        train_model(load_config("digits", ["train.epochs=1", "data.loader=dali"]))


def test_fit_matches_sgd_with_momentum_and_decay_written_out_in_float64():
    """fit's fused SGD step against the update rule by hand: g = grad + wd * w; b = m * b + g; w -= lr(t) * b."""
    torch.manual_seed(1)
    model = torch.nn.Linear(6, 3)
    start = [p.detach().double().clone() for p in model.parameters()]
    loader = [(torch.randn(5, 6), torch.randint(0, 3, (5,)), torch.arange(5)) for _ in range(4)]
    sgd = SGDSpec(lr=0.3, momentum=0.9, weight_decay=1e-2, schedule="linear")

    def ce(net, batch, progress):
        return F.cross_entropy(net(batch.images), batch.labels), None

    fit(model, loader, ce, epochs=2, sgd=sgd, execution=FP32)
    weights, buffers = start, [torch.zeros_like(w) for w in start]
    schedule = lr_lambda("linear", 8, 4, 0, 0)
    for step in range(8):
        images, labels, _ = loader[step % 4]
        w = [p.clone().requires_grad_(True) for p in weights]
        loss = F.cross_entropy(images.double() @ w[0].T + w[1], labels)
        grads = torch.autograd.grad(loss, w)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(weights, grads, strict=True)):
                buffers[i] = 0.9 * buffers[i] + g + 1e-2 * p if step else g + 1e-2 * p
                weights[i] = p - 0.3 * schedule(step) * buffers[i]
    for p, expected in zip(model.parameters(), weights, strict=True):
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-6)


def test_the_loop_reads_the_device_only_at_the_progress_interval(monkeypatch):
    """No host read per step: with an interval longer than the run, the loss is read once, at the end."""
    reads = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _real=real, _name=name: (reads.append(_name),
                                                                                     _real(self))[1])
    model = build_model("cnn", 10, 1, width=4)

    def ce(net, batch, progress):
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels), logits

    steps = 2 * len(_tiny_loader())
    for interval, expected in ((1e9, 1), (0.0, steps + 1)):  # a read every step would be seen
        reads.clear()
        monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", interval)
        fit(model, _tiny_loader(), ce, epochs=2, sgd=SGDSpec(lr=0.01), execution=FP32)
        assert len(reads) == expected, reads


def test_compiled_fit_traces_the_loss_once_and_passes_progress_as_a_tensor(monkeypatch):
    """Under compile the loss function (model and loss) is one graph for the whole run: `progress` arrives as a 0-d
    tensor, not as a float that would become a constant of the graph and recompile every step; the run gives the
    eager result, the progress-weighted term included (TorchDynamo capture, eager backend: no code generation)."""
    import torch._dynamo

    monkeypatch.setattr(train_module, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    torch.manual_seed(3)
    start = torch.nn.Linear(6, 3)
    loader = [(torch.randn(5, 6), torch.randint(0, 3, (5,)), torch.arange(5)) for _ in range(4)]

    def decaying_penalty(net, batch, progress):
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels) + (1.0 - progress) * net.weight.square().sum(), logits

    models = {}
    for compile in (False, True):
        models[compile] = copy.deepcopy(start)
        graphs = counters["stats"]["unique_graphs"]
        fit(models[compile], loader, decaying_penalty, epochs=2, sgd=SGDSpec(lr=0.1, schedule="linear"),
            execution=ExecSpec(amp=False, compile=compile))
        assert counters["stats"]["unique_graphs"] - graphs == compile  # one graph for all 8 steps, not 8
    for a, b in zip(models[True].parameters(), models[False].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
