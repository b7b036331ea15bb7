"""Configs: every shipped file loads, overrides apply with TOML types, mistakes are named."""

import pytest

from fastforget.config import CONFIG_DIR, load_config, parse_override
from fastforget.errors import ConfigError


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.data["name"] and cfg.model["arch"] and cfg.train.epochs > 0
    assert cfg.train.label_smoothing == 0.0  # RWFT learns from the original's non-target probabilities


def test_overrides_take_toml_types():
    cfg = load_config("digits", ["train.epochs=3", "train.lr=0.5", "train.amp=false", "model.arch=resnet18",
                                     "unlearn.rwft-o.epochs=2"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.amp, cfg.model["arch"]) == (3, 0.5, False, "resnet18")
    assert cfg.method_overrides("rwft-o") == {"epochs": 2, "batch_size": 16, "lr": 5e-05}  # file values kept
    assert parse_override("bench.forget=[1, 2]") == (["bench", "forget"], [1, 2])


def test_mistakes_are_named():
    with pytest.raises(ConfigError, match="no config 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"unknown setting train.epoch .*did you mean 'epochs'"):
        load_config("digits", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("digits", ["epochs"])


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", r"train.epochs must be an integer >= 1, not -1 \(from the command line: train.epochs=-1\)"),
    ("train.epochs=0", "must be an integer >= 1, not 0"),
    ("train.epochs=abc", "must be an integer"),
    ("train.epochs=1.5", "must be an integer"),
    ("train.epochs=true", "must be an integer"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1, not 0"),
    ("train.lr=-0.1", "must be a number > 0, not -0.1"),
    ("train.lr=nan", "must be a finite number"),
    ("train.lr=inf", "must be a finite number"),
    ("train.momentum=1", "must be a number >= 0 and < 1, not 1.0"),
    ("train.amp=1", "must be true or false"),
    ("train.schedule=bogus", "must be one of constant, step, onecycle, linear"),
    ("train.schedule=onecylce", "did you mean 'onecycle'"),
    ("model.arch=resnet", "did you mean 'resnet18'"),
    ("model.width=0", "model.width must be an integer >= 1, not 0"),
    ("model.widht=16", r"unknown setting model.widht .*did you mean 'width'.*model takes arch, width"),
    ("model.nonexistent=1", "unknown setting model.nonexistent"),
    ("data.flipp=true", "did you mean 'flip'"),
    ("data.loader=disk", "must be one of memory, ffcv"),
    ("trian.epochs=1", r"unknown config section 'trian' .*did you mean 'train'"),
    ("nonexistent.key=1", "unknown config section 'nonexistent'"),
    ("train=3", "must name a section and a key"),
    ("train.epochs.x=1", "train.epochs is a value, not a section"),
    ("eval.metrics=[1]", "an item of eval.metrics"),
    ("unlearn.rwft0.epochs=1", r"names no method .*did you mean 'rwft-o'"),
    ("unlearn.rwft-o.epochs=0", r"rwft-o hyperparameter epochs must be an integer >= 1, not 0 \(from the command line"),
    ("unlearn.rwft-o.epoch=3", "did you mean 'epochs'"),
    ("unlearn.ssd.alpha=nan", "must be a finite number"),
    ("unlearn.rwft-o=3", "must be a table of hyperparameters"),
])
def test_bad_values_and_keys_are_refused_with_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("digits", [override])


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[data]\nname = "digits"\n[train]\nepochs = -3\n')
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer >= 1, not -3 \(from .*mine.toml\)"):
        load_config(path)
    path.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_ints_are_accepted_for_floats_and_kept_as_floats():
    cfg = load_config("digits", ["train.lr=1", "train.weight_decay=0"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and isinstance(cfg.raw["train"]["lr"], float)


def test_every_setting_is_declared_once_with_a_default_of_its_type():
    """The schema is the dataclasses: DEFAULTS derives from them, and every shipped file passes through it."""
    from dataclasses import fields

    from fastforget.config import DEFAULTS, SECTIONS

    for section, cls in SECTIONS.items():
        assert list(DEFAULTS[section]) == [f.name for f in fields(cls)]
        for f in fields(cls):
            assert "rule" in f.metadata, (section, f.name)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_bench_sections_name_real_methods_and_settings(path):
    from fastforget.bench import BENCH_DEFAULTS, REFERENCE_ROWS
    from fastforget.unlearn import METHODS

    raw = load_config(path).raw
    bench = raw.get("bench", {})
    assert set(bench) <= set(BENCH_DEFAULTS)
    for variant in bench.get("variants", {}).values():
        assert variant["method"] in METHODS and set(variant) - {"method"} <= set(METHODS[variant["method"]].defaults)
    for method in bench.get("methods", []):
        assert method in METHODS or method in REFERENCE_ROWS or method in bench.get("variants", {}), method
    for method, overrides in raw["unlearn"].items():
        assert set(overrides) <= set(METHODS[method].defaults), (method, overrides)
