"""Checkpoints round-trip exactly, refuse a model they do not fit, and are never left half-written."""

import json
from pathlib import Path

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
    for where in (tmp_path / "run", path, path.with_suffix(".json")):
        loaded, meta = load_checkpoint(where)
        assert meta["arch"] == "resnet18" and meta["wrappers"] == []
        for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(a, b)


def test_wrapped_model_round_trips(tmp_path):
    model = IdentityAdapters(build_model("resnet18", 10, 3, width=4), "layer3", 16, 10)
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


# --- written whole or not at all ---------------------------------------------------------------------------------

def _cnn_meta():
    return {**_meta(arch="cnn"), "arch_args": {"width": 4, "in_channels": 1}}


def _weights(path):
    return {k: v.clone() for k, v in load_checkpoint(path)[0].state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _model(seed: int):
    torch.manual_seed(seed)
    model = build_model("cnn", 10, 1, width=4)
    torch.nn.init.normal_(model.fc.weight)
    return model


def test_sidecar_records_the_hash_of_its_weights(tmp_path):
    import hashlib

    save_checkpoint(tmp_path, _model(0), _cnn_meta())
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")) == []


def test_weights_replaced_by_hand_are_refused_not_loaded(tmp_path):
    save_checkpoint(tmp_path / "a", _model(0), _cnn_meta())
    save_checkpoint(tmp_path / "b", _model(1), _cnn_meta())
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not the file its sidecar"):
        load_checkpoint(tmp_path / "a")


def test_a_kill_inside_the_first_write_leaves_the_previous_model(tmp_path, monkeypatch):
    """Weights written, sidecar not yet: nothing at --out changes (the pair is staged beside it)."""
    import fastforget.checkpoint as ckpt

    out = tmp_path / "run"
    save_checkpoint(out, _model(0), _cnn_meta())
    before = _weights(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(out, _model(1), _cnn_meta())
    monkeypatch.undo()
    assert _same(_weights(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the staging folder is cleaned up
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(ckpt, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(fresh, _model(1), _cnn_meta())
    assert not fresh.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-swap", "two-renames"])
def test_a_kill_while_the_pair_is_put_in_place_loses_nothing(tmp_path, monkeypatch, exchange):
    """Overwriting a run folder: a kill at any step of the swap leaves a complete old and a complete new model."""
    import os

    import fastforget.checkpoint as ckpt

    out = tmp_path / "run"
    save_checkpoint(out, _model(0), _cnn_meta())
    old = _weights(out)
    if not exchange:
        monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    real_rename, real_rmtree = os.rename, ckpt.shutil.rmtree
    steps = []

    def kill_at_the_last_step(*args, **kwargs):
        steps.append(args)
        raise KeyboardInterrupt  # the process dies before it tidies up

    monkeypatch.setattr(ckpt.shutil, "rmtree", kill_at_the_last_step)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(out, _model(1), _cnn_meta())
    assert not _same(_weights(out), old)  # the new model is in place, whole
    leftover = steps[0][0]
    assert _same(_weights(leftover), old)  # and the old one is still on disk, whole
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    real_rmtree(leftover)
    if exchange:
        return
    # two renames: a kill between them leaves no model at --out, both complete beside it, and says so
    calls = []

    def dies_on_the_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", dies_on_the_second_rename)
    new = _weights(out)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(out, _model(2), _cnn_meta())
    (_, previous), (staged, _) = calls
    assert not out.exists() and _same(_weights(previous), new)
    assert not _same(_weights(staged), new)
    with pytest.raises(CheckpointError, match="an interrupted write left a complete model in"):
        load_checkpoint(out)


def test_a_kill_between_the_two_files_of_a_shared_folder_is_refused_at_load(tmp_path, monkeypatch):
    """A run folder that holds other files too gets the two files replaced one by one: a pair cut apart by a kill
    fails to load (the sidecar's hash), and the staging folder keeps the complete new pair."""
    import os

    import fastforget.checkpoint as ckpt

    out = tmp_path / "run"
    save_checkpoint(out, _model(0), _cnn_meta())
    (out / "eval.json").write_text("{}")
    real_replace, calls = os.replace, []

    def dies_on_the_second_file(src, dst):
        calls.extend([dst] if Path(dst).parent == out else [])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dies_on_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(out, _model(1), _cnn_meta())
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="written apart"):
        load_checkpoint(out)
    staged = next(tmp_path.glob(".run.writing-*"))
    assert _same(_weights(staged), _model(1).state_dict()) and (out / "eval.json").read_text() == "{}"


def test_a_real_sigkill_between_the_two_writes_loses_nothing(tmp_path):
    """The process is killed (SIGKILL: no clean-up runs) after the weights and before the sidecar are written."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    save_checkpoint(out, _model(0), _cnn_meta())
    before = _weights(out)
    script = (
        "import os, signal, torch\n"
        "import fastforget.checkpoint as ckpt\n"
        "from fastforget.models import build_model\n"
        "ckpt.write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"ckpt.save_checkpoint({str(out)!r}, build_model('cnn', 10, 1, width=4), {_cnn_meta()!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ}, timeout=300, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert _same(_weights(out), before)
    save_checkpoint(out, _model(1), _cnn_meta())  # and the next write succeeds
    assert not _same(_weights(out), before)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_folders_honour_the_umask(tmp_path, umask):
    import os
    import stat

    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "run", _model(0), _cnn_meta())
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert modes == {"model.safetensors": 0o666 & ~umask, "model.json": 0o666 & ~umask}
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o777 & ~umask


# --- outputs checked before any work, data checked at load ---------------------------------------------------------

def test_model_outputs_are_checked_before_any_work(tmp_path):
    from fastforget.checkpoint import check_model_out
    from fastforget.errors import OutputError

    save_checkpoint(tmp_path / "original", _model(0), _cnn_meta())
    with pytest.raises(OutputError, match="is the folder of the input checkpoint"):
        check_model_out(tmp_path / "original", overwrite=True, inputs=[tmp_path / "original" / "model.safetensors"])
    with pytest.raises(OutputError, match=r"already holds a model \(original cnn on cifar10\): pass --overwrite"):
        check_model_out(tmp_path / "original")
    assert check_model_out(tmp_path / "original", overwrite=True) == tmp_path / "original"
    (tmp_path / "file").write_text("x")
    for path, message in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "which is a file")):
        with pytest.raises(OutputError, match=message):
            check_model_out(path)
    assert check_model_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_the_data_a_checkpoint_was_trained_on_is_checked(tmp_path):
    from fastforget.checkpoint import check_data
    from fastforget.data import data_fingerprint, load_dataset
    from fastforget.errors import DataMismatchError

    digits = load_dataset("digits")
    meta = {"classes": digits.classes, "image_size": 8, "data_fingerprint": data_fingerprint(digits)}
    check_data(meta, digits, "ckpt")
    shuffled = load_dataset("digits")
    shuffled.train_labels = shuffled.train_labels.roll(1)  # same sizes and classes, other labels
    with pytest.raises(DataMismatchError, match="trained on other data"):
        check_data(meta, shuffled, "ckpt")
    legacy = {"classes": digits.classes, "image_size": 28}  # a sidecar from before fingerprints
    with pytest.raises(DataMismatchError, match="trained on other data"):
        check_data(legacy, digits, "ckpt")
    check_data({"classes": digits.classes, "image_size": 8}, digits, "ckpt")


def test_a_run_folder_whose_parent_is_not_writable_stages_inside_it(tmp_path, monkeypatch):
    import tempfile

    import fastforget.checkpoint as ckpt

    out = tmp_path / "run"
    out.mkdir()
    real = tempfile.mkdtemp

    def parent_refuses(prefix: str, dir: Path) -> str:
        if Path(dir) == tmp_path:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(prefix=prefix, dir=dir)

    monkeypatch.setattr(ckpt.tempfile, "mkdtemp", parent_refuses)
    save_checkpoint(out, _model(3), _cnn_meta())
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    assert _same(_weights(out), _model(3).state_dict())
