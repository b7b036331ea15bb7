"""Checkpoints: safetensors weights plus a JSON sidecar that says exactly what model and data they belong to."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fastforget.errors import CheckpointError
from fastforget.io import atomic_write, write_json
from fastforget.models import apply_wrappers, build_model, wrapper_specs

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """Accept a run folder or its `.safetensors` file; return (weights, sidecar)."""
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    sidecar = weights.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run folder holding {WEIGHTS} and {SIDECAR}, "
                              f"or the .safetensors file itself (write one with `fastforget train --out DIR`)")
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {weights} has no sidecar {sidecar.name} beside it; "
                              "fastforget needs it to rebuild the model")
    return weights, sidecar


def save_checkpoint(out_dir: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write DIR/model.safetensors and DIR/model.json atomically (weights first, so a sidecar implies weights)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {**meta, "wrappers": wrapper_specs(model)}
    atomic_write(out_dir / WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    write_json(out_dir / SIDECAR, meta)
    return out_dir / WEIGHTS


def read_sidecar(path: str | Path) -> dict:
    _, sidecar = resolve_checkpoint(path)
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"sidecar {sidecar} is not valid JSON ({err}); re-create the checkpoint") from err


def model_from_meta(meta: dict) -> nn.Module:
    """Build the (wrapped) architecture a sidecar describes, with fresh weights."""
    try:
        model = build_model(meta["arch"], num_classes=len(meta["classes"]), **meta.get("arch_args", {}))
    except KeyError as err:
        raise CheckpointError(f"sidecar lacks the field {err}; it was not written by fastforget") from err
    return apply_wrappers(model, meta.get("wrappers", []))


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load weights into `model`, failing with a message that names what does not fit."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {weights}: {err}; the file is corrupt or not safetensors") from err
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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, sidecar)."""
    weights, _ = resolve_checkpoint(path)
    meta = read_sidecar(weights)
    model = load_weights(model_from_meta(meta), weights)
    return model.to(map_location).eval(), meta
