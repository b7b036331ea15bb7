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
    with pytest.raises(ConfigError, match="unknown train setting"):
        load_config("digits", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("digits", ["epochs"])


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
