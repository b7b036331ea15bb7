"""A user's own models and data: the model contract's resolver, torchvision / timm architectures by name, every
method on a torchvision ResNet-18 and on a plain nn.Module, `api.evaluate` on objects, and a plain state_dict
evaluated from the command line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_cli import fastforget  # the CLI in this process, output captured
from torch import nn
from torch.utils.data import TensorDataset

from fastforget import api
from fastforget.checkpoint import read_state_dict
from fastforget.data import load_dataset
from fastforget.data.user import as_image_dataset
from fastforget.errors import CheckpointError, DataError, ModelContractError
from fastforget.models import LogitMask, build_model
from fastforget.models.contract import classifier_name, middle_block, output_channels
from fastforget.unlearn import METHODS

timm = pytest.importorskip("timm")


class Plain(nn.Module):
    """A model with no attribute fastforget knows of."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                  nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def digits_tensors():
    """A small slice of digits as (images, labels) pairs: user data, every class present."""
    digits = load_dataset("digits")
    return (digits.train_images[:160], digits.train_labels[:160]), (digits.test_images[:90], digits.test_labels[:90])


@pytest.mark.parametrize(("build", "classifier", "middle"), [
    (lambda: build_model("torchvision:resnet18", 10, 1), "fc", ["layer3"]),
    (lambda: build_model("torchvision:vgg11_bn", 10), "classifier.6", [f"features.{i}" for i in range(15, 22)]),
    (lambda: build_model("timm:resnet18", 10, 1), "fc", ["layer3"]),
    (lambda: build_model("timm:convnext_atto", 10), "head.fc", ["stages.2"]),
    (lambda: build_model("vgg19_bn", 10, width=4), "fc", ["block4"]),
    (lambda: LogitMask(build_model("cnn", 10, 1, width=4), [3], 10), "base.fc", ["base.block2"]),
    (lambda: Plain(), "head", None),
], ids=["torchvision-resnet18", "torchvision-vgg11_bn", "timm-resnet18", "timm-convnext", "own-vgg", "own-wrapped",
        "plain"])
def test_resolver_finds_classifier_and_middle_block(build, classifier, middle):
    model = build()
    assert classifier_name(model, 10) == classifier
    assert isinstance(model.get_submodule(classifier), nn.Linear)
    if middle is None:
        with pytest.raises(ModelContractError, match=r"top-level children: body \(Sequential\), head \(Linear\)"):
            middle_block(model, method="rwft-2-o", key="blocks")
    else:
        assert middle_block(model) == middle


def test_resolver_errors_name_the_fix():
    with pytest.raises(ModelContractError, match=r"no nn.Linear classifier with 7 outputs.*body \(Sequential\)"):
        classifier_name(Plain(), 7)
    with pytest.raises(ModelContractError, match=r"not a \[B, C, H, W\] feature map"):
        output_channels(Plain(), "body.6", (1, 8, 8))  # the Flatten


def test_external_architectures_take_channels_and_the_cifar_stem():
    model = build_model("torchvision:resnet18", 10, 1, cifar_stem=1).eval()
    assert model.conv1.in_channels == 1 and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert output_channels(model, "layer3", (1, 32, 32)) == 256
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    assert build_model("timm:resnet18", 5, 1)(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="torchvision has no model 'resnet19'"):
        build_model("torchvision:resnet19", 10)
    with pytest.raises(ValueError, match="cifar_stem applies to ResNets"):
        build_model("torchvision:vgg11", 10, cifar_stem=1)


def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if name in before and not torch.equal(before[name], p)}


# Which parameters each method may move (None: not checked), per model kind.
TRAINED = {
    "rwft-2-o": {"resnet18": ("layer3.", "fc."), "plain": ("body.2.", "body.3.", "head.")},
    "rw-a": {"resnet18": (), "plain": ()},
    "rw-mask": {"resnet18": (), "plain": ()},
}
HYPERPARAMETERS = {"svd": {"samples_per_class": 4, "forget_samples": 8}, "ssd": {"batch_size": 32}}
PLAIN_PARTS = {"rwft-2-o": {"blocks": ["body.2", "body.3", "head"]}, "rw-a": {"adapter_after": "body.4"}}


# The methods that need parts of the model (the contract), and retrain (which rebuilds the architecture). The
# others use only `model(x)` and its parameters: the plain module runs them all, ResNet-18 would add minutes of
# CPU time and no new path (svd alone: 4608 x 4608 eigendecompositions for layer4).
CONTRACT_METHODS = ["bu-expand", "retrain", "rw-a", "rw-mask", "rwft-2-o"]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "kind"), [*((m, "plain") for m in sorted(METHODS)),
                                              *((m, "resnet18") for m in CONTRACT_METHODS)])
def test_every_method_runs_on_a_user_model(method, kind, digits_tensors):
    train, test = digits_tensors
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", 10, 1) if kind == "resnet18" else Plain()
    before = _parameters(model)
    hp = {"epochs": 1} if "epochs" in METHODS[method].defaults else {}
    hp |= HYPERPARAMETERS.get(method, {}) | (PLAIN_PARTS.get(method, {}) if kind == "plain" else {})
    overrides = ["train.epochs=1", "train.batch_size=32"]  # retrain's recipe
    result = api.unlearn(method, model, [3], data=train, test_data=test, overrides=overrides, **hp)
    assert not _changed(before, model), "the user's model was modified"
    out = result.model(test[0][:4].float() / 255)
    assert out.shape == (4, 10) and not out.isnan().any()
    assert 0 <= result.meta["acc_r_test"] <= 100 and result.meta["method"] == method
    allowed = TRAINED.get(method, {}).get(kind)
    if allowed is not None:
        moved = _changed(before, result.model)
        assert moved and all(name.startswith(allowed) for name in moved) if allowed else not moved, sorted(moved)


def test_a_plain_model_says_which_blocks_to_name(digits_tensors):
    train, test = digits_tensors
    with pytest.raises(ModelContractError, match=r"blocks=\[.*top-level children: body \(Sequential\)"):
        api.unlearn("rwft-2-o", Plain(), [3], data=train, test_data=test, epochs=1)


def test_evaluate_takes_modules_and_tensors(digits_tensors):
    train, test = digits_tensors
    torch.manual_seed(0)
    original = Plain()
    unlearned = api.unlearn("rw-mask", original, [3], data=train, test_data=test).model
    report = api.evaluate(unlearned, train, [3], test_data=test, original=original, metrics=["accuracy", "mia"],
                          options={"train_samples": 0})
    assert report.acc_f_test == 0.0 and report["acc_f_test"] == report.acc_f_test  # the mask removes class 3
    # ACC_r from the masked model equals an independent count on the retained test rows
    data = as_image_dataset(train, test)
    normalised = (test[0].float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(
        1, -1, 1, 1)
    with torch.no_grad():
        predicted = unlearned.eval()(normalised).argmax(1)
    retained = test[1] != 3
    assert report.acc_r_test == pytest.approx(100 * (predicted[retained] == test[1][retained]).float().mean().item())
    assert report.checkpoint == "LogitMask" and report.original == "Plain"


def test_user_data_conversion_and_its_errors(digits_tensors):
    train, test = digits_tensors
    as_float = (train[0].float() / 255, train[1])
    data = as_image_dataset(TensorDataset(*as_float), test, classes=[f"digit {i}" for i in range(10)])
    assert torch.equal(data.train_images, train[0]) and data.classes[3] == "digit 3"
    with pytest.raises(DataError, match="need test_data"):
        as_image_dataset(train)
    with pytest.raises(DataError, match=r"in \[0, 1\].*no Normalize"):
        as_image_dataset((as_float[0] * 2 - 1, train[1]), test)
    with pytest.raises(DataError, match="class names"):
        as_image_dataset(train, test, classes=["a", "b"])


def test_plain_state_dict_evaluated_from_the_command_line(tmp_path, digits_tensors):
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", 10, 1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "my.pt")
    loaded = read_state_dict(tmp_path / "my.pt")
    assert loaded.keys() == model.state_dict().keys()
    torch.save(model, tmp_path / "pickled.pt")  # a whole pickled model: refused, never unpickled
    with pytest.raises(CheckpointError, match="holds more than tensors"):
        read_state_dict(tmp_path / "pickled.pt")

    args = ["eval", "--checkpoint", tmp_path / "my.pt", "--arch", "torchvision:resnet18", "--data", "digits",
            "--forget", "3", "--metrics", "accuracy", "--json", tmp_path / "report.json",
            "--samples", tmp_path / "samples.npz"]
    result = fastforget(*args)
    assert result.code == 0, result.err
    assert "ACC_f" in result.out
    report = json.loads((tmp_path / "report.json").read_text())
    expected = api.evaluate(copy.deepcopy(model), "digits", [3], metrics=["accuracy"])
    assert report["acc_r_test"] == pytest.approx(expected.acc_r_test)
    logits = torch.from_numpy(np.load(tmp_path / "samples.npz")["unlearned_test_logits"])
    assert logits.shape == (len(load_dataset("digits").test_labels), 10)
    missing = fastforget(*args[:3], "--data", "digits", "--forget", "3")
    assert missing.code == 2 and "--arch" in missing.err


def test_an_image_folder_with_val_through_the_command_line(tmp_path):
    """torchvision / timm layout: train/<class>/ and val/<class>/ (no test/), PNG files, via data.root and
    --data-dir."""
    from PIL import Image

    digits = load_dataset("digits")
    folder = tmp_path / "images"
    for split, images, labels, count in (("train", digits.train_images, digits.train_labels, 30),
                                         ("val", digits.test_images, digits.test_labels, 10)):
        for c in range(3):
            (folder / split / f"class {c}").mkdir(parents=True)
            for i, index in enumerate(torch.nonzero(labels == c).flatten()[:count]):
                Image.fromarray(images[index, 0].numpy()).save(folder / split / f"class {c}" / f"{i}.png")
    run = fastforget("train", "--set", "data.name=imagefolder", f"data.root={folder}", "train.epochs=2",
                     "--out", tmp_path / "original")
    assert run.code == 0, run.err
    assert json.loads((tmp_path / "original" / "model.json").read_text())["classes"] == [
        "class 0", "class 1", "class 2"]
    report = fastforget("eval", "--checkpoint", tmp_path / "original", "--forget", "class 1", "--metrics", "accuracy",
                        "--data-dir", folder, "--json", tmp_path / "r.json")
    assert report.code == 0, report.err
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["dataset"] == "imagefolder" and saved["data_fingerprint"]["test_size"] == 30


def test_forget_sets_of_samples(digits_tensors):
    """Indices or a mask of training samples, for the methods that take them; the RWFT family says it is
    class-level."""
    from fastforget.config import load_config
    from fastforget.errors import ConfigError
    from fastforget.unlearn import UnlearnContext

    train, test = digits_tensors
    data = as_image_dataset(train, test)
    chosen = torch.tensor([5, 3, 77, 3, 120])
    mask = torch.zeros(len(train[1]), dtype=torch.bool)
    mask[chosen] = True
    contexts = [UnlearnContext(original=Plain(), meta={}, dataset=data, forget=[], cfg=load_config("digits"),
                               device=torch.device("cpu"), forget_samples=given) for given in (chosen, mask)]
    for ctx in contexts:
        assert ctx.splits.train_f.tolist() == [3, 5, 77, 120]
        assert sorted(ctx.splits.train_f.tolist() + ctx.splits.train_r.tolist()) == list(range(len(train[1])))
        assert len(ctx.splits.test_f) == 0
    torch.manual_seed(0)
    result = api.unlearn("ga", Plain(), data=train, test_data=test, forget_indices=chosen, epochs=1)
    assert result.meta["forget_samples"] == [3, 5, 77, 120] and 0 <= result.meta["acc_forget_samples"] <= 100
    with pytest.raises(ConfigError, match=r"rwft-o forgets whole classes.*works with .*ga"):
        api.unlearn("rwft-o", Plain(), data=train, test_data=test, forget_indices=chosen)
    with pytest.raises(ConfigError, match="outside the training split"):
        api.unlearn("ga", Plain(), data=train, test_data=test, forget_indices=[len(train[1])])


def test_a_user_module_saved_by_unlearn_says_how_to_load_it(tmp_path, digits_tensors):
    from fastforget.checkpoint import load_checkpoint, load_weights

    train, test = digits_tensors
    api.unlearn("rw-mask", Plain(), [3], data=train, test_data=test, out=tmp_path / "masked")
    with pytest.raises(CheckpointError, match=r"a model of your own \(Plain\).*pass the module"):
        load_checkpoint(tmp_path / "masked")
    rebuilt = load_weights(LogitMask(Plain(), [3], 10), tmp_path / "masked" / "model.safetensors")
    assert rebuilt.forget_mask.tolist()[3]
