"""Configs: one TOML file per setting in `configs/`, every value overridable with `section.key=value`.

A config names the data set, the model, the training recipe and the per-method unlearning overrides; `Config`
keeps the merged dictionary (what sidecars record) and typed views of the parts the code reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from fastforget.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS: dict[str, Any] = {
    "data": {"name": "digits", "root": "", "crop_padding": 0, "flip": False, "loader": "memory"},
    "model": {"arch": "cnn", "width": 32},
    "train": {
        "epochs": 30, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "schedule": "onecycle", "step_size": 40, "gamma": 0.1, "label_smoothing": 0.0,
        "amp": True, "compile": False, "channels_last": True, "seed": 0, "device": "auto",
    },
    "unlearn": {},
    "eval": {"metrics": ["accuracy", "mia", "mia_nn", "utv"], "batch_size": 512},
    "bench": {},
}


@dataclass
class TrainRecipe:
    """How originals, retrained and shadow models are trained (SPEC: SGD 0.1 / 0.9 / 5e-4, StepLR 40/0.1)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    step_size: int = 40
    gamma: float = 0.1
    label_smoothing: float = 0.0
    amp: bool = True
    compile: bool = False
    channels_last: bool = True
    seed: int = 0
    device: str = "auto"


@dataclass
class Config:
    raw: dict[str, Any]
    source: str = ""
    data: dict[str, Any] = field(init=False)
    model: dict[str, Any] = field(init=False)
    train: TrainRecipe = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.raw["data"]
        self.model = self.raw["model"]
        known = {f.name for f in fields(TrainRecipe)}
        unknown = set(self.raw["train"]) - known
        if unknown:
            raise ConfigError(f"unknown train setting(s) {sorted(unknown)}; known: {sorted(known)}")
        self.train = TrainRecipe(**self.raw["train"])

    def method_overrides(self, method: str) -> dict[str, Any]:
        return dict(self.raw["unlearn"].get(method, {}))

    @property
    def arch_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "arch"}


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); values are TOML literals, bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.epochs=3)")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def find_config(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_path}.toml"
    if named.is_file():
        return named
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    raise ConfigError(f"no config {name_or_path!r}: give a TOML file or one of {available}")


def load_config(name_or_path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- config file (or `base`, a config dict recorded in a sidecar) <- overrides."""
    raw = _merge(DEFAULTS, base or {})
    source = "checkpoint sidecar" if base else ""
    if name_or_path:
        path = find_config(name_or_path)
        try:
            raw = _merge(raw, tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from err
        source = str(path)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return Config(raw=raw, source=source)
