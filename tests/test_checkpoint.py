"""Checkpoints round-trip exactly, refuse a model they do not fit, and are never left half-written."""

import json

import pytest
import torch

from fastforget.checkpoint import load_checkpoint, load_weights, save_checkpoint
from fastforget.errors import CheckpointError
from fastforget.models import IdentityAdapters, build_model


def _meta(classes=10, width=4, arch="resnet18"):
    return {"arch": arch, "arch_args": {"width": width, "in_channels": 3}, "dataset": "cifar10",
            "classes": [f"c{i}" for i in range(classes)], "seed": 0}


def test_round_trip_is_exact_and_accepts_folder_or_file(tmp_path):
    model = build_model("resnet18", 10, 3, width=4).to(memory_format=torch.channels_last)
    torch.nn.init.normal_(model.fc.weight)
    path = save_checkpoint(tmp_path / "run", model, _meta())
    for where in (tmp_path / "run", path):
        loaded, meta = load_checkpoint(where)
        assert meta["arch"] == "resnet18" and meta["wrappers"] == []
        for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(a, b)


def test_wrapped_model_round_trips(tmp_path):
    model = IdentityAdapters(build_model("resnet18", 10, 3, width=4))
    torch.nn.init.normal_(model.head_adapter.weight)
    save_checkpoint(tmp_path, model, _meta())
    loaded, _ = load_checkpoint(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.mark.parametrize("other", [dict(classes=7), dict(width=8), dict(arch="vgg19_bn")])
def test_wrong_model_is_refused_with_a_clear_message(tmp_path, other):
    save_checkpoint(tmp_path, build_model("resnet18", 10, 3, width=4), _meta())
    meta = _meta(**other)
    wrong = build_model(meta["arch"], len(meta["classes"]), 3, width=meta["arch_args"]["width"])
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(wrong, tmp_path / "model.safetensors")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(tmp_path, build_model("cnn", 10, 1, width=4), _meta(arch="cnn"))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import fastforget.checkpoint as ckpt

    def explode(state, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, build_model("cnn", 10, 1, width=4), _meta(arch="cnn"))
    assert list(tmp_path.iterdir()) == []


def test_sidecar_is_json_with_the_contract_fields(tmp_path):
    save_checkpoint(tmp_path, build_model("cnn", 10, 1, width=4), _meta(arch="cnn"))
    meta = json.loads((tmp_path / "model.json").read_text())
    assert {"arch", "dataset", "classes", "seed", "wrappers"} <= set(meta)
