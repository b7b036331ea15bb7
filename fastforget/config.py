"""Configs: one TOML file per setting in `configs/`, every value overridable with `section.key=value`.

A config names the data set, the model, the training recipe and the per-method unlearning overrides; `Config`
keeps the merged dictionary (what sidecars record) and typed views of the parts the code reads.

Every setting is declared once, as a field of its section's dataclass below (`DataSettings`, `ModelSettings`,
`TrainRecipe`, `EvalSettings`): its default gives its type, `setting(...)` its range or choices. A config whose
keys or values do not fit is refused with a message naming the key, the problem and, for a misspelt key, the key
that was meant. `[unlearn.METHOD]` tables are checked against the method registry, `[bench]` by `fastforget.bench`.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from fastforget.errors import ConfigError, ConfigValueError

# The repository's configs/, through the symlink fastforget/configs that also ships them in the wheel.
CONFIG_DIR = (Path(__file__).resolve().parent / "configs").resolve()

SCHEDULES = ("constant", "step", "onecycle", "linear")


@dataclass(frozen=True)
class Rule:
    """How one value is checked beyond its type (which comes from its default, or `kind` where that is None)."""

    min: float | None = None        # value >= min
    above: float | None = None      # value > above
    below: float | None = None      # value < below
    max: float | None = None        # value <= max
    choices: Sequence[str] | Callable[[], Iterable[str]] | None = None  # a callable for registries, read lazily
    kind: type | None = None

    def bounds(self) -> str:
        parts = [f">= {self.min:g}" if self.min is not None else "", f"> {self.above:g}" if self.above is not None
                 else "", f"< {self.below:g}" if self.below is not None else "",
                 f"<= {self.max:g}" if self.max is not None else ""]
        return " and ".join(p for p in parts if p)

    def allowed(self) -> list[str] | None:
        if self.choices is None:
            return None
        return sorted(self.choices()) if callable(self.choices) else list(self.choices)


def setting(default: Any, **rule: Any) -> Any:
    """A dataclass field declaring one config key: its default and its `Rule`."""
    factory = (lambda: copy.deepcopy(default)) if isinstance(default, list | dict) else None
    return field(default=MISSING if factory else default, default_factory=factory or MISSING,
                 metadata={"rule": Rule(**rule)})


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a table"}


def check_value(name: str, value: Any, default: Any, rule: Rule | None = None, origin: str = "") -> Any:
    """`value` checked against the type of `default` and `rule`; returns it (ints given for floats as floats).

    Raises ConfigValueError: `NAME must be REQUIREMENT, not VALUE (from ORIGIN)`.
    """
    rule = rule or Rule()
    kind = type(default) if default is not None else rule.kind
    if value is None and default is None:
        return None

    def fail(requirement: str, hint: str = "") -> ConfigValueError:
        where = f" (from {origin})" if origin else ""
        return ConfigValueError(f"{name} must be {requirement}, not {value!r}{where}{hint}")

    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    numeric = kind in (int, float) or isinstance(value, int | float) and not isinstance(value, bool)
    requirement = " ".join(filter(None, [_TYPE_NAMES.get(kind, getattr(kind, "__name__", "")),
                                         rule.bounds() if numeric else ""]))
    if kind is not None and not (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        allowed = rule.allowed()
        raise fail(requirement + (f", one of {', '.join(allowed)}" if allowed else ""))
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(f"a finite number{' ' + rule.bounds() if rule.bounds() else ''}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        ok = ((rule.min is None or value >= rule.min) and (rule.above is None or value > rule.above)
              and (rule.below is None or value < rule.below) and (rule.max is None or value <= rule.max))
        if not ok:
            raise fail(requirement)
    allowed = rule.allowed()
    if allowed is not None:
        bad = [item for item in (value if isinstance(value, list) else [value]) if not _is_allowed(item, allowed)]
        if bad:
            what = "a list of" if isinstance(value, list) else "one of"
            raise fail(f"{what} {', '.join(map(str, allowed))}", did_you_mean(str(bad[0]), allowed))
    return value


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known word, or nothing."""
    close = difflib.get_close_matches(word, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _architectures() -> list[str]:
    from fastforget.models import architecture_names

    return architecture_names()


def _is_allowed(item: Any, allowed: Sequence[str]) -> bool:
    """A choice written `PREFIX:NAME` stands for any non-empty name after that prefix (`torchvision:resnet18`)."""
    prefix, _, name = str(item).partition(":")
    return item in allowed or bool(name) and f"{prefix}:NAME" in allowed


@dataclass
class DataSettings:
    name: str = setting("digits")  # checked by load_dataset, which accepts spellings such as Fashion_MNIST
    root: str = setting("")
    crop_padding: int = setting(0, min=0)
    flip: bool = setting(False)
    loader: str = setting("memory", choices=("memory", "ffcv", "stream"))  # stream: image folders left on disk
    image_size: int = setting(0, min=0)  # image folders: resize to N x N on reading (shorter side, centre crop)
    workers: int = setting(-1, min=-1)  # stream: decoding processes (-1: one per core but one, at most 8)


@dataclass
class ModelSettings:
    """`width` applies to fastforget's own architectures, `cifar_stem` (0/1) to torchvision / timm ResNets."""

    arch: str = setting("cnn", choices=_architectures)
    width: int = setting(32, min=1)
    cifar_stem: int = setting(0, min=0, max=1)


@dataclass
class TrainRecipe:
    """How originals, retrained and shadow models are trained (SPEC: SGD 0.1 / 0.9 / 5e-4, StepLR 40/0.1)."""

    epochs: int = setting(30, min=1)
    batch_size: int = setting(128, min=1)
    lr: float = setting(0.1, above=0)
    momentum: float = setting(0.9, min=0, below=1)
    weight_decay: float = setting(5e-4, min=0)
    schedule: str = setting("onecycle", choices=SCHEDULES)
    step_size: int = setting(40, min=1)
    gamma: float = setting(0.1, above=0)
    label_smoothing: float = setting(0.0, min=0, below=1)
    amp: bool = setting(True)
    compile: bool = setting(False)
    channels_last: bool = setting(True)
    seed: int = setting(0, min=0)
    device: str = setting("auto")  # checked where it is used (runtime.resolve_device): cuda needs a GPU


@dataclass
class EvalSettings:
    metrics: list = setting(["accuracy", "mia", "mia_nn", "utv"], kind=str)
    batch_size: int = setting(512, min=1)


SECTIONS: dict[str, type] = {"data": DataSettings, "model": ModelSettings, "train": TrainRecipe,
                             "eval": EvalSettings}
FREE_SECTIONS = ("unlearn", "bench")  # checked against the method registry and by fastforget.bench
DEFAULTS: dict[str, Any] = {**{name: asdict(cls()) for name, cls in SECTIONS.items()},
                            **{name: {} for name in FREE_SECTIONS}}


def _rules(section: str) -> dict[str, tuple[Any, Rule]]:
    return {f.name: (DEFAULTS[section][f.name], f.metadata["rule"]) for f in fields(SECTIONS[section])}


def check_setting(section: str, key: str, value: Any, origin: str) -> Any:
    """One value checked against its declaration (for flags such as --epochs that set a config key)."""
    default, rule = _rules(section)[key]
    return check_value(f"{section}.{key}", value, default, rule, origin)


def check_sections(raw: Mapping[str, Any], origin: str, overridden: Mapping[str, str] | None = None) -> None:
    """Every section and key known, every value of its type and range; `overridden` maps the dotted keys that
    command-line overrides set to their text, so that a message names the override at fault."""
    known = [*SECTIONS, *FREE_SECTIONS]
    overridden = overridden or {}
    for section, table in raw.items():
        if section not in known:
            where = next((t for k, t in overridden.items() if k.split(".")[0] == section), None)
            where = f"the command line: {where}" if where else origin
            raise ConfigError(f"unknown config section {section!r} (from {where}){did_you_mean(section, known)}; "
                              f"sections: {', '.join(known)}")
        if not isinstance(table, dict):
            raise ConfigError(f"config section {section!r} (from {origin}) must be a table of settings, not "
                              f"{table!r}: write {section}.KEY=VALUE")
        if section not in SECTIONS:
            continue
        rules = _rules(section)
        for key, value in table.items():
            text = overridden.get(f"{section}.{key}")
            where = f"the command line: {text}" if text else origin
            if key not in rules:
                raise ConfigError(f"unknown setting {section}.{key} (from {where}){did_you_mean(key, rules)}; "
                                  f"{section} takes {', '.join(rules)}")
            default, rule = rules[key]
            table[key] = check_value(f"{section}.{key}", value, default, rule, where)
            if isinstance(default, list) and rule.kind is not None:
                for item in table[key]:
                    check_value(f"an item of {section}.{key}", item, None, Rule(kind=rule.kind), where)


@dataclass
class Config:
    raw: dict[str, Any]
    source: str = ""
    overridden: dict[str, str] = field(default_factory=dict)  # dotted key -> the override that set it
    data: dict[str, Any] = field(init=False)
    model: dict[str, Any] = field(init=False)
    train: TrainRecipe = field(init=False)

    def __post_init__(self) -> None:
        origin = self.source or "the defaults"
        check_sections(self.raw, origin, self.overridden)
        from fastforget.unlearn.registry import check_method_tables  # the registry imports this module

        check_method_tables(self.raw["unlearn"], origin, self.overridden)
        self.data = self.raw["data"]
        self.model = self.raw["model"]
        self.train = TrainRecipe(**self.raw["train"])

    def method_overrides(self, method: str) -> dict[str, Any]:
        return dict(self.raw["unlearn"].get(method, {}))

    @property
    def arch_args(self) -> dict[str, Any]:
        """The `[model]` values the configured architecture takes (all but `arch`, `in_channels`)."""
        from fastforget.models import arch_parameters

        takes = set(arch_parameters(self.model["arch"])) - {"in_channels"}
        return {k: v for k, v in self.model.items() if k in takes}


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); values are TOML literals, bare words are strings."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.epochs=3)")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return [part.strip() for part in key.strip().split(".")], parsed


def find_config(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_path}.toml"
    if named.is_file():
        return named
    if path.is_dir():
        raise ConfigError(f"config {name_or_path!r} is a folder: give a TOML file or a config name")
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    raise ConfigError(f"no config {name_or_path!r}{did_you_mean(str(name_or_path), available)}: give a TOML file "
                      f"or one of {available}")


def _apply_override(raw: dict, text: str) -> str:
    """Set the value an override names; returns its dotted key."""
    keys, value = parse_override(text)
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"override {text!r} must name a section and a key, like train.epochs=3")
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: {'.'.join(keys[:depth + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value
    return ".".join(keys)


def load_config(name_or_path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- config file (or `base`, a config dict recorded in a sidecar) <- overrides."""
    if base is not None and not isinstance(base, dict):
        raise ConfigError("the checkpoint sidecar's config is not a table; re-create the checkpoint or pass --config")
    raw = _merge(DEFAULTS, base or {})
    source = "the checkpoint sidecar's config" if base else ""
    if name_or_path:
        path = find_config(name_or_path)
        try:
            raw = _merge(raw, tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid TOML ({err}); fix the file") from err
        source = _shown(path)
    overridden = {_apply_override(raw, text): text for text in overrides}
    return Config(raw=raw, source=source, overridden=overridden)


def _shown(path: Path) -> str:
    """A config file as a message shows it: configs/NAME.toml for the shipped ones."""
    return f"configs/{path.name}" if path.resolve().parent == CONFIG_DIR else str(path)
