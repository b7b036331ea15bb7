"""Checkpoints: safetensors weights plus a JSON sidecar that says exactly what model and data they belong to.

A checkpoint is written whole or not at all: weights and sidecar go into a staging folder beside the run folder,
which one rename then puts in place (a folder holding a previous model alone is swapped in one step). The sidecar
records the weights' SHA-256, checked at load, so weights and a sidecar that were written apart are refused, never
loaded as a model they are not; and it records a fingerprint of the data, checked wherever the data are loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import pickle
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fastforget.data import ImageDataset, data_fingerprint
from fastforget.errors import CheckpointError, DataMismatchError, OutputError
from fastforget.io import check_output_dir, dir_mode, file_mode, write_json
from fastforget.models import (
    ARCHITECTURES,
    apply_wrappers,
    arch_parameters,
    architecture_names,
    build_model,
    is_external,
    wrapper_specs,
)

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"
RECREATE = "re-create it with `fastforget train` or `fastforget unlearn`"


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """Accept a run folder, its `.safetensors` file or its sidecar; return (weights, sidecar)."""
    path = Path(path).expanduser()
    weights = path / WEIGHTS if path.is_dir() else path.with_suffix(".safetensors") if path.suffix == ".json" else path
    sidecar = weights.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run folder holding {WEIGHTS} and {SIDECAR}, "
                              f"or the .safetensors file itself (write one with `fastforget train --out DIR`)"
                              f"{_leftovers(path)}")
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {weights} has no sidecar {sidecar.name} beside it, so fastforget cannot "
                              f"tell its architecture: {RECREATE}, or, for a model trained elsewhere, give its "
                              "architecture and data (--arch torchvision:resnet18 --data NAME; arch= in the API)")
    return weights, sidecar


def _leftovers(path: Path) -> str:
    """Where an interrupted write left a complete model, if it did."""
    found = sorted(path.parent.glob(f".{path.name}.*-*/{SIDECAR}")) if path.parent.is_dir() else []
    return f"; an interrupted write left a complete model in {found[0].parent}" if found else ""


# --- writing -------------------------------------------------------------------------------------------------------

def save_checkpoint(out_dir: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write DIR/model.safetensors and DIR/model.json, both or neither: see the module docstring."""
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.writing-", dir=out_dir.parent))
    except OSError:
        if not out_dir.is_dir():
            raise
        # a run folder we may write in a folder we may not: stage inside it, then replace the two files
        staging = Path(tempfile.mkdtemp(prefix=f".{WEIGHTS}.writing-", dir=out_dir))
    try:
        save_file(state, str(staging / WEIGHTS), metadata={"format": "pt"})
        meta = {**meta, "wrappers": wrapper_specs(model), "weights_sha256": file_sha256(staging / WEIGHTS)}
        write_json(staging / SIDECAR, meta)
        for name in (WEIGHTS, SIDECAR):
            _chmod_and_sync(staging / name, file_mode())
        os.chmod(staging, dir_mode())  # mkdtemp makes 0700; a run folder is an ordinary folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _place(staging, out_dir)
    return out_dir / WEIGHTS


def _place(staging: Path, out_dir: Path) -> None:
    """Put the complete pair in `staging` at `out_dir`; from here on a kill never loses a complete model."""
    entries = set(os.listdir(out_dir)) if out_dir.is_dir() else None
    if not entries:  # absent or empty: one rename (an empty folder is replaced)
        os.rename(staging, out_dir)
        return
    if entries <= {WEIGHTS, SIDECAR} and not Path.cwd().resolve().is_relative_to(out_dir):
        # a previous model alone (and not the folder we stand in): swap the two folders
        if not _exchange(staging, out_dir):
            previous = out_dir.with_name(f".{out_dir.name}.replaced-{secrets.token_hex(4)}")
            os.rename(out_dir, previous)  # a kill between these renames leaves both models complete on disk
            os.rename(staging, out_dir)
            staging = previous
        shutil.rmtree(staging)
        return
    # A folder that holds other files too: replace the two files. Until both are in place the staging folder keeps
    # the new pair, and the recorded hash makes a pair cut apart by a kill fail to load rather than load wrongly.
    for name in (SIDECAR, WEIGHTS):
        tmp = out_dir / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.link(staging / name, tmp)
        except OSError:
            shutil.copy2(staging / name, tmp)
        os.replace(tmp, out_dir / name)
    shutil.rmtree(staging)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _chmod_and_sync(path: Path, mode: int) -> None:
    """The mode a plain `open` would give under the umask (safetensors and mkstemp differ), then on disk."""
    os.chmod(path, mode)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_out(out: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = (),
                    flag: str = "--out") -> Path:
    """Before any work: `out` can be written, is not the folder of an input checkpoint, and does not hold a model
    unless `overwrite`."""
    out = check_output_dir(out, flag)
    for given in inputs:
        given = Path(given).expanduser()
        folder = given if given.is_dir() else given.parent
        if folder.resolve() == out.resolve():
            raise OutputError(f"{flag} {out} is the folder of the input checkpoint {given}: writing there would "
                              f"destroy it; give another {flag} (--overwrite never writes into an input)")
    if (out / WEIGHTS).exists() or (out / SIDECAR).exists():
        if not overwrite:
            raise OutputError(f"{flag} {out} already holds a model ({_describe(out)}): pass --overwrite to replace "
                              f"it, or give another {flag}")
    return out


def _describe(folder: Path) -> str:
    try:
        meta = json.loads((folder / SIDECAR).read_text())
        return f"{meta.get('method', 'original')} {meta['arch']} on {meta['dataset']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unreadable sidecar"


# --- reading -------------------------------------------------------------------------------------------------------

def read_sidecar(path: str | Path) -> dict:
    """The sidecar of a checkpoint, checked: a JSON object whose fields have the types fastforget writes."""
    _, sidecar = resolve_checkpoint(path)
    try:
        meta = json.loads(sidecar.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"sidecar {sidecar} is not UTF-8 text ({err.reason} at byte {err.start}): the file is "
                              f"damaged; restore it or {RECREATE}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"sidecar {sidecar} is not valid JSON ({err}); restore it or {RECREATE}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"sidecar {sidecar} holds a JSON {type(meta).__name__}, not an object: it was not "
                              f"written by fastforget; {RECREATE}")
    _check_sidecar(meta, sidecar)
    return meta


def _check_sidecar(meta: dict, sidecar: Path) -> None:
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"sidecar {sidecar}: {problem}; restore the sidecar or {RECREATE}")

    for key in ("arch", "dataset", "classes"):
        if key not in meta:
            raise bad(f"it lacks the field {key!r}, so it was not written by fastforget")
    if isinstance(meta["arch"], str) and meta["arch"].startswith("module:"):
        raise CheckpointError(f"{sidecar} holds the weights of a model of your own ({meta['arch'][7:]}), which "
                              "fastforget cannot rebuild: build it, load the weights into it (model.load_state_dict("
                              "safetensors.torch.load_file(PATH))) and pass the module to the API")
    if not isinstance(meta["arch"], str) or not (meta["arch"] in ARCHITECTURES or is_external(meta["arch"])):
        raise bad(f"unknown arch {meta['arch']!r}; fastforget builds {', '.join(architecture_names())}")
    if not isinstance(meta["dataset"], str):
        raise bad(f"dataset must be a data set name, not {meta['dataset']!r}")
    classes = meta["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise bad(f"classes must be the list of class names (at least two), not {classes!r:.60}")
    arch_args = meta.get("arch_args", {})
    takes = arch_parameters(meta["arch"])
    if not isinstance(arch_args, dict):
        raise bad(f"arch_args must be an object of {', '.join(takes)}, not {arch_args!r:.60}")
    unknown = sorted(set(arch_args) - set(takes))
    if unknown:
        raise bad(f"arch_args has unknown key(s) {unknown}; {meta['arch']} takes {', '.join(takes)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= (0 if k == "cifar_stem" else 1)
               for k, v in arch_args.items()):
        raise bad(f"arch_args values must be positive integers (cifar_stem 0 or 1), not {arch_args}")
    for key in ("excluded", "forget"):
        value = meta.get(key, [])
        if not (isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                                and 0 <= c < len(classes) for c in value)):
            raise bad(f"{key} must be a list of class indices 0..{len(classes) - 1}, not {value!r:.60}")
    if not isinstance(meta.get("wrappers", []), list) or not all(isinstance(w, dict) for w in meta.get("wrappers", [])):
        raise bad(f"wrappers must be a list of wrapper specs, not {meta.get('wrappers')!r:.60}")
    if not isinstance(meta.get("seed", 0), int) or isinstance(meta.get("seed"), bool):
        raise bad(f"seed must be an integer, not {meta.get('seed')!r}")
    if not isinstance(meta.get("config", {}), dict):
        raise bad(f"config must be an object, not {meta.get('config')!r:.60}")


def model_from_meta(meta: dict) -> nn.Module:
    """Build the (wrapped) architecture a sidecar describes, with fresh weights."""
    try:
        model = build_model(meta["arch"], num_classes=len(meta["classes"]), **meta.get("arch_args", {}))
        return apply_wrappers(model, meta.get("wrappers", []), len(meta["classes"]))
    except KeyError as err:
        raise CheckpointError(f"sidecar lacks the field {err}; it was not written by fastforget") from None
    except (ValueError, TypeError, AttributeError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"the sidecar describes a model fastforget cannot build ({err}); {RECREATE}") from None


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load weights into `model`, failing with a message that names what does not fit."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {weights}: {err}; the file is corrupt or not safetensors") from None
    return load_state(model, state, weights)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state_dict saved outside fastforget: `.safetensors`, or a torch file (`.pt`, `.pth`, `.bin`) read
    with `weights_only=True` (no code runs): a dict of tensors, or one under the key `state_dict` or `model`.
    DataParallel's `module.` prefix is dropped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}: give a .pt / .pth / .safetensors file")
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True refusing a pickled object
        raise CheckpointError(f"{path} holds more than tensors (a pickled model or object), which fastforget does "
                              "not unpickle: save model.state_dict() instead") from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(f"cannot read {path} as a state_dict ({first}); save one with "
                              "torch.save(model.state_dict(), PATH) or safetensors.torch.save_file") from None
    if isinstance(state, dict):
        state = next((state[key] for key in ("state_dict", "model") if isinstance(state.get(key), dict)), state)
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{path} is not a state_dict (a dict of tensors): save model.state_dict()")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], weights: str | Path) -> nn.Module:
    """Load a state_dict read from `weights` into `model`, failing with a message that names what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}" if missing else "",
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}" if unexpected else "",
            f"shape mismatch {shapes[:3]}" if shapes else "",
        ]))
        raise CheckpointError(f"checkpoint {weights} does not fit this {type(model).__name__} ({detail}): "
                              "it was saved from another architecture, width or class count")
    model.load_state_dict(state)
    return model


def verify_weights(weights: Path, meta: dict) -> None:
    """The weights are the ones the sidecar was written with (sidecars from before the hash was recorded pass)."""
    recorded = meta.get("weights_sha256")
    if recorded is not None and file_sha256(weights) != recorded:
        raise CheckpointError(f"{weights} is not the file its sidecar {SIDECAR} was written with (SHA-256 differs): "
                              "the two were written apart (an interrupted write, or a file replaced by hand); "
                              f"restore the matching pair or {RECREATE}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, sidecar)."""
    weights, _ = resolve_checkpoint(path)
    meta = read_sidecar(weights)
    verify_weights(weights, meta)
    model = load_weights(model_from_meta(meta), weights)
    return model.to(map_location).eval(), meta


def check_data(meta: dict, dataset: ImageDataset, path: str | Path) -> None:
    """The data set is the one the checkpoint at `path` was trained on (its recorded fingerprint, else its classes
    and image size): a sidecar edited to name other data is refused rather than evaluated against them."""
    recorded = meta.get("data_fingerprint")
    found = data_fingerprint(dataset)
    same = recorded == found if recorded is not None else (
        meta["classes"] == dataset.classes and meta.get("image_size", dataset.image_size) == dataset.image_size)
    if not same:
        def shown(fp: dict | None) -> str:
            if not isinstance(fp, dict):
                return f"{len(meta['classes'])} classes {meta['classes'][:3]}..."
            return (f"{fp.get('train_size')} train / {fp.get('test_size')} test samples of shape "
                    f"{fp.get('image_shape')}, labels {fp.get('labels_sha256')}")
        raise DataMismatchError(f"checkpoint {path} was trained on other data than {dataset.name!r} here (recorded: "
                                f"{shown(recorded)}; found: {shown(found)}): its sidecar was edited or the data "
                                "changed; use the data it was trained on (data.root or FASTFORGET_DATA), or "
                                "retrain on these data")
