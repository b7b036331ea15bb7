"""The metric registry: every metric file registers itself, and a new metric is one file. Shown by adding one, from a
file the package has never seen, and finding it in `evaluate`'s results, the `eval` command's rows, the benchmark's
tables and report, with no other edit."""

import json
import sys
import textwrap

import numpy as np
import pytest
from metric_helpers import random_probs

import fastforget.metrics as metrics_package
from fastforget import bench, cli
from fastforget.data import load_dataset
from fastforget.evaluate import evaluate, model_outputs
from fastforget.metrics import (
    METRICS,
    EvalOptions,
    accuracy,
    default_metrics,
    discover,
    mia,
    mia_nn,
    nearest_class,
    reassignment,
    utv,
)
from fastforget.metrics.registry import NOT_METRICS, SETTINGS, unregister

NEW_METRIC = '''
"""Mean top-class confidence on the forget test samples: a toy metric, one file."""

from fastforget.metrics.intervals import bootstrap_mean
from fastforget.metrics.registry import Column, EvalContext, register


@register("forget_confidence", summary="mean top-class probability on D_test_f", table="table9_confidence",
          title="Confidence on the forget class", columns=[Column("forget_confidence", "conf f", "lower", decimals=3)],
          settings={"confidence_power": 1.0})
def compute(ctx: EvalContext) -> dict:
    top = ctx.target.test_probs[ctx.splits.test_f].max(1).values.double() ** ctx.setting("confidence_power")
    return {"forget_confidence": float(top.mean()), "forget_confidence_ci": bootstrap_mean(top.numpy(), seed=ctx.seed)}
'''


def test_every_metric_module_registers_itself():
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(metrics_package.__path__)
               if not m.name.startswith("_") and m.name not in NOT_METRICS}
    assert modules == {metric.compute.__module__.rsplit(".", 1)[1] for metric in METRICS.values()}
    assert set(default_metrics()) == {"accuracy", "mia", "mia_nn", "utv", "reassignment"}
    assert {"ulira", "rmia"} <= set(METRICS) and METRICS["ulira"].needs == ("shadows",)


@pytest.fixture
def new_metric(tmp_path, monkeypatch):
    """Drop one metric file into the package's search path and let discovery find it."""
    (tmp_path / "forget_confidence.py").write_text(textwrap.dedent(NEW_METRIC))
    monkeypatch.setattr(metrics_package, "__path__", [*metrics_package.__path__, str(tmp_path)])
    discover()
    yield METRICS["forget_confidence"]
    unregister("forget_confidence")
    sys.modules.pop("fastforget.metrics.forget_confidence", None)


def test_a_metric_added_as_one_file_reaches_evaluate_eval_and_the_bench_tables(new_metric, digits_original,
                                                                                tmp_path):
    digits = load_dataset("digits")
    outputs = model_outputs(digits_original.model, digits)
    results, skipped = evaluate(outputs, digits, [3], options=EvalOptions(
        metrics=("accuracy", "forget_confidence"), settings={"confidence_power": 2.0}))
    expected = (outputs.test_probs[digits.test_labels == 3].max(1).values.double() ** 2).mean()
    assert results["forget_confidence"] == pytest.approx(float(expected)) and skipped == {}
    assert SETTINGS["confidence_power"] == 1.0 and EvalOptions.from_dict({"confidence_power": 3}).settings

    report = {**results, "skipped": skipped, "classes": digits.classes}
    rows = cli._eval_rows(report)
    ci = results["forget_confidence_ci"]
    assert rows["conf f ↓"] == f"{results['forget_confidence']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    record = {"cell": "x|3|s0", "method": "rwft-2-o", "forget": [3], "forget_names": ["3"], "seed": 0, **results}
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    assert "table9_confidence" in bench.tables()
    report_md = bench.write_report(tmp_path, digits.classes, {}).read_text()
    assert "## Confidence on the forget class" in report_md and "conf f ↓" in report_md
    assert (tmp_path / "table9_confidence.csv").is_file()


def test_an_unknown_metric_or_option_is_a_clear_error():
    from fastforget.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown metric 'nope'.*accuracy"):
        EvalOptions(metrics=("nope",)).metric_names()
    with pytest.raises(ConfigError, match="unknown evaluation option.*shadow_pairs"):
        EvalOptions.from_dict({"shadow_pairs": 3})


def test_every_result_serialises(rng):
    """One pass over the metrics' plain functions on the same outputs: no numpy scalars, no NaN."""
    probs = random_probs(rng, 300, 4)
    labels = rng.integers(0, 4, 300)
    results = [accuracy(probs, labels, 1), mia(probs, labels, probs[::-1], labels[::-1], 1),
               mia_nn(probs, labels, 1, nearest_class(probs[labels == 1], 1)),
               utv(probs, [probs[::-1], probs]), reassignment(probs, labels, 1)]
    for result in results:
        as_dict = result.as_dict()
        assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert np.isfinite(results[1].score)
