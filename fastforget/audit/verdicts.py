"""Verdicts: each audited value against its own yardstick, stated as a test with its threshold.

The rule of a value follows from the registry's metadata alone, so a metric registered later is audited without
editing this file. One table, keyed by `Column.better` (which way is better), says what the yardstick is:

Every test asks whether the value's 95% interval reaches its yardstick, so that a model is called leaking only
when the evidence separates it from retraining (a bootstrap interval covers the samples, not the seed-to-seed
spread of retraining, which the yardstick's own bounds stand in for):

- "lower" (ACC_f, MIA-NN, UTV, TPR at low FPR, the probe): the interval's lower bound is not above the yardstick's
  upper bound. The yardstick is the floor the column names (`Column.floor`: UTV against the
  retrained-vs-retrained floor), else the same value of the retrained models, evaluated exactly like the model
  under audit (the widest bound over them).
- "higher" (MIA, ACC_r): the interval's upper bound is not below the retrained models' lowest lower bound.
- "50" / "0.5" (U-LIRA, RMIA's AUC): an attack's success rate whose chance level is the ideal: the interval's
  lower bound is not above it (below chance is no evidence of membership).
- "none": reported, never tested.

`Column.audit` says what a failure means: a leak of the forget class ("forget"), a shortfall on the retained
classes ("retain"), or nothing ("none": yardsticks such as the floors themselves). A value whose attack is marked
uninformative (`Column.informative`) is "not informative", never a pass; so is every test that the original model
itself passes (`apply_control`): it cannot see the class on this model and data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastforget.metrics.registry import METRICS, Column, Metric

INDISTINGUISHABLE = "indistinguishable from retraining"
LEAKS = "leaks"
SHORTFALL = "below retraining"
NOT_INFORMATIVE = "not informative"


@dataclass(frozen=True)
class Rule:
    """How one direction of "better" becomes a test."""

    yardstick: str  # "retrained": the retrained models' values; "ideal": a fixed chance level
    ideal: float | None = None


RULES: dict[str, Rule | None] = {
    "lower": Rule("retrained"),
    "higher": Rule("retrained"),
    "50": Rule("ideal", 50.0),
    "0.5": Rule("ideal", 0.5),
    "none": None,
}


@dataclass
class Verdict:
    """One test: the value, its interval, the threshold it is held to and what came of it."""

    key: str
    label: str
    metric: str
    kind: str  # "output" (the model's outputs) or "white-box" (its weights and features)
    concern: str  # "forget" or "retain"
    value: float
    interval: list[float] | None
    threshold: float | None
    test: str  # the test in words, with its threshold
    verdict: str
    excess: float | None = None  # how far past the threshold, in the value's units (positive = worse)
    excess_widths: float | None = None  # the excess in widths of the yardstick's interval, where it has one
    yardstick: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # the attack's own quality, where it was judged

    @property
    def passed(self) -> bool:
        return self.verdict == INDISTINGUISHABLE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def needs_retrained_values(metric: Metric) -> bool:
    """Whether the metric must also run on the retrained models: some tested column has no floor or ideal."""
    return any(column.audit != "none" and column.floor is None and (rule := RULES[column.better]) is not None
               and rule.yardstick == "retrained" for column in metric.columns)


def _bounds(results: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """(low, high) of a value: its interval, or the value itself where it has none."""
    value = results.get(key)
    if value is None:
        return None
    interval = results.get(f"{key}_ci") or [value, value]
    return float(interval[0]), float(interval[1])


def judge(*, key: str, label: str, metric: str, better: str, value: float, interval: Sequence[float] | None,
          yardsticks: Sequence[tuple[float, float]] = (), floor: tuple[float, float] | None = None,
          informative: bool | None = None, concern: str = "forget", kind: str = "output", scale: float = 1.0,
          decimals: int = 2, source: str = "the retrained models") -> Verdict | None:
    """The verdict of one value (None where its direction is never tested, or its yardstick is missing).

    `yardsticks` are (low, high) of the same value on each retrained model; `floor` (low, high) replaces them with
    the retrained-vs-retrained floor; `informative` False makes the test uninformative.
    """
    rule = RULES[better]
    if rule is None:
        return None
    shown = lambda x: f"{x * scale:.{decimals}f}"  # noqa: E731
    low, high = (interval[0], interval[1]) if interval else (value, value)
    width = None
    if rule.yardstick == "ideal":
        threshold, failed = rule.ideal, low > rule.ideal
        test = f"lower bound <= {shown(threshold)} (chance)"
        excess, yardstick = value - threshold, {"kind": "chance", "value": threshold}
    elif floor is not None:
        threshold, width = floor[1], floor[1] - floor[0]
        failed = low > threshold
        test = f"lower bound <= {shown(threshold)}, the top of the retrained-vs-retrained floor " \
               f"[{shown(floor[0])}, {shown(floor[1])}]"
        excess, yardstick = value - threshold, {"kind": "floor", "interval": list(floor)}
    elif yardsticks:
        if better == "lower":
            threshold = max(bound for _, bound in yardsticks)
            failed, excess = low > threshold, value - threshold
            test = f"lower bound <= {shown(threshold)}, the highest upper bound of {source}"
        else:
            threshold = min(bound for bound, _ in yardsticks)
            failed, excess = high < threshold, threshold - value
            test = f"upper bound >= {shown(threshold)}, the lowest lower bound of {source}"
        yardstick = {"kind": "retrained", "intervals": [list(bounds) for bounds in yardsticks]}
    else:
        return None
    if informative is False:
        verdict = NOT_INFORMATIVE
    elif failed:
        verdict = LEAKS if concern == "forget" else SHORTFALL
    else:
        verdict = INDISTINGUISHABLE
    return Verdict(key=key, label=label, metric=metric, kind=kind, concern=concern, value=float(value),
                   interval=list(interval) if interval else None, threshold=float(threshold), test=test,
                   verdict=verdict, excess=float(excess) if failed else None,
                   excess_widths=float(excess / width) if failed and width else None, yardstick=yardstick)


def column_verdict(metric: Metric, column: Column, results: Mapping[str, Any],
                   retrained_results: Sequence[Mapping[str, Any]], untested: dict[str, str] | None = None
                   ) -> Verdict | None:
    """The verdict of one registered column of the model under audit; where a tested value has no yardstick,
    None and the reason in `untested`."""
    if column.audit == "none" or RULES[column.better] is None or results.get(column.key) is None:
        return None
    floor = _bounds(results, column.floor) if column.floor else None
    if column.floor and floor is None:
        if untested is not None:
            untested[column.label] = f"no floor ({column.floor}): give two retrained models of different seeds"
        return None
    yardsticks = [b for r in retrained_results if (b := _bounds(r, column.key)) is not None]
    informative = results.get(column.informative) if column.informative else None
    verdict = judge(key=column.key, label=column.label, metric=metric.name, better=column.better,
                    value=results[column.key], interval=results.get(f"{column.key}_ci"), yardsticks=yardsticks,
                    floor=floor, informative=informative, concern=column.audit, scale=column.scale,
                    decimals=column.decimals)
    if verdict is not None and column.evidence:
        verdict.evidence = {column.evidence: results.get(column.evidence), "informative": informative}
    return verdict


def output_verdicts(metric_names: Sequence[str], results: Mapping[str, Any],
                    retrained_results: Sequence[Mapping[str, Any]], untested: dict[str, str] | None = None
                    ) -> list[Verdict]:
    """Every tested column of every metric that ran, in registry order."""
    verdicts = []
    for name in metric_names:
        metric = METRICS[name]
        for column in metric.columns:
            verdict = column_verdict(metric, column, results, retrained_results, untested)
            if verdict is not None:
                verdicts.append(verdict)
    return verdicts


def apply_control(verdicts: Sequence[Verdict], control: Sequence[Verdict]) -> None:
    """The original model is every test's positive control: it certainly holds class f, so a test it passes cannot
    see f on this model and data, and the audited model's pass there means nothing: "not informative"."""
    passed_by_original = {v.key: v for v in control if v.passed}
    for verdict in verdicts:
        if verdict.concern == "forget" and verdict.key in passed_by_original:
            original = passed_by_original[verdict.key]
            verdict.verdict, verdict.excess, verdict.excess_widths = NOT_INFORMATIVE, None, None
            verdict.evidence = {**verdict.evidence, "original_value": original.value,
                                "original_interval": original.interval, "original_passes": True}


def overall(verdicts: Sequence[Verdict]) -> tuple[str, int]:
    """The audit's answer and its exit code: 1 when any test of the forget class leaks, else 0."""
    if any(v.verdict == LEAKS for v in verdicts):
        return LEAKS, 1
    if not any(v.concern == "forget" and v.passed for v in verdicts):
        return NOT_INFORMATIVE, 0
    return INDISTINGUISHABLE, 0
