"""The metric registry: every metric is one file in `fastforget/metrics/` that registers one compute function here.

A metric declares its name, the models it needs beyond the one under evaluation (original / retrained / shadows /
references), its settings with their defaults, the flat result keys it reports as table columns (with the
direction that is better), and whether `fastforget eval` runs it by default. `fastforget.evaluate`, the `eval`
command's rows and options, the benchmark's tables and every default derive from here, so adding a metric is one
file (and its test): nothing else lists the metrics.

`compute(ctx: EvalContext) -> dict` returns flat JSON-ready values; an interval for key `k` goes under `k_ci`
as [low, high]. It raises `Skip(reason)` when a soft requirement is not met (MIA-NN without any model to name the
nearest class).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch

from fastforget.data import ForgetSplits, ImageDataset
from fastforget.errors import ConfigError

Need = Literal["original", "retrained", "shadows", "references"]
NEEDS: dict[str, str] = {
    "original": "needs the original model: give --original",
    "retrained": "needs a retrained model of the same forget classes and seed: give --retrained",
    "shadows": "needs shadow models: the config to train them and the unlearning method to replay on them "
               "(an unlearned checkpoint's sidecar records both)",
    "references": "needs reference models: the config to train them (a checkpoint's sidecar records it)",
}
Better = Literal["higher", "lower", "50", "0.5", "none"]
AuditRole = Literal["forget", "retain", "none"]
ARROWS: dict[str, str] = {"higher": "↑", "lower": "↓", "50": "→50", "0.5": "→0.5", "none": ""}
NOT_METRICS = ("registry", "intervals", "plots")  # modules of this package that register nothing


class UnknownMetricError(ConfigError):
    pass


class Skip(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a compute function: this metric cannot run on these inputs, for the reason given."""


@dataclass(frozen=True)
class Column:
    """One reported value: a result key, how it is shown, and which way is better."""

    key: str
    header: str
    better: Better
    decimals: int = 2
    scale: float = 1.0  # shown as value * scale (bytes as MiB)
    in_table: bool = True  # False: reported by `eval` and in JSON, not a benchmark-table column
    informative: str | None = None  # a bool result key; False marks the value as uninformative
    evidence: str | None = None  # a result key shown beside that mark (the attack's own AUC)
    # What `fastforget audit` tests with this value (its rule follows from `better`, see fastforget.audit.verdicts):
    # that class f is gone ("forget": a failure is a leak), that the retained classes are kept ("retain": a
    # failure is a shortfall), or nothing ("none": a yardstick, such as a floor, reported beside the tests).
    audit: AuditRole = "forget"
    floor: str | None = None  # a result key with this value's retrained-vs-retrained floor: the audit's yardstick

    @property
    def label(self) -> str:
        arrow = ARROWS[self.better]
        return f"{self.header} {arrow}" if arrow else self.header

    def format(self, value: float, interval: Sequence[float] | None = None) -> str:
        """`value [low, high]` at this column's precision and scale."""
        text = f"{value * self.scale:.{self.decimals}f}"
        if not interval:
            return text
        low, high = (bound * self.scale for bound in interval)
        return f"{text} [{low:.{self.decimals}f}, {high:.{self.decimals}f}]"


def uninformative_mark(count: int, cells: int = 1, evidence: float | None = None) -> str:
    """The mark beside a score whose attack could not tell its own members apart in `count` of `cells` cells."""
    if not count:
        return ""
    auc = f"attack AUC {evidence:.2f}, not above chance" if evidence is not None else "attack at chance"
    return f"  uninformative ({auc})" if cells == 1 else f"  uninformative in {count}/{cells} cells ({auc})"


@dataclass(frozen=True)
class Metric:
    name: str
    summary: str
    compute: Callable[[EvalContext], dict]
    needs: tuple[str, ...]
    columns: tuple[Column, ...]
    table: str | None  # the benchmark table its columns go to
    title: str
    default: bool  # run by `fastforget eval` and the benchmark unless metrics are named
    settings: Mapping[str, Any]
    notes: Callable[[dict, list[str]], list[tuple[str, str]]] | None  # extra `eval` rows from the results
    # checks the settings before any model is trained (settings, whether the target comes with a retrained model)
    check: Callable[[Mapping[str, Any], bool], None] | None = None


METRICS: dict[str, Metric] = {}
SETTINGS: dict[str, Any] = {}  # every metric setting and its default, one namespace
TABLE_TITLES: dict[str, str] = {}


def register(name: str, *, summary: str, columns: Sequence[Column] = (), needs: Sequence[Need] = (),
             table: str | None = None, title: str = "", default: bool = True,
             settings: Mapping[str, Any] | None = None,
             notes: Callable[[dict, list[str]], list[tuple[str, str]]] | None = None,
             check: Callable[[Mapping[str, Any], bool], None] | None = None,
             ) -> Callable[[Callable[[EvalContext], dict]], Callable[[EvalContext], dict]]:
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"metric {name!r} needs unknown model kinds {sorted(unknown)}; known: {sorted(NEEDS)}")

    def decorate(compute: Callable[[EvalContext], dict]) -> Callable[[EvalContext], dict]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        clashes = set(settings or {}) & set(SETTINGS) | set(settings or {}) & {f.name for f in fields(EvalOptions)}
        if clashes:
            raise ValueError(f"metric {name!r} declares settings {sorted(clashes)} that already exist")
        METRICS[name] = Metric(name=name, summary=summary, compute=compute, needs=tuple(needs), columns=tuple(columns),
                               table=table, title=title or name, default=default, settings=dict(settings or {}),
                               notes=notes, check=check)
        SETTINGS.update(settings or {})
        if table is not None:
            TABLE_TITLES.setdefault(table, title or name)
        return compute

    return decorate


def unregister(name: str) -> None:
    """Remove a metric (and its settings): for tests that register one of their own."""
    metric = METRICS.pop(name)
    for key in metric.settings:
        SETTINGS.pop(key, None)
    if metric.table is not None and not any(m.table == metric.table for m in METRICS.values()):
        TABLE_TITLES.pop(metric.table, None)


def discover() -> None:
    """Import every metric module of this package, so that each registers itself."""
    package = importlib.import_module("fastforget.metrics")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in NOT_METRICS:
            importlib.import_module(f"fastforget.metrics.{module.name}")


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise UnknownMetricError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


def default_metrics() -> tuple[str, ...]:
    return tuple(name for name, metric in METRICS.items() if metric.default)


def all_columns() -> dict[str, Column]:
    return {column.key: column for metric in METRICS.values() for column in metric.columns}


# ------------------------------------------------------------------------------- what a metric is computed from


@dataclass
class Outputs:
    """Logits of one model (fp32, CPU) on the training samples `train_rows` (sorted) and on the whole test split.

    Models that only serve as yardsticks (original, retrained) may be evaluated on the forget rows alone.
    """

    train: torch.Tensor
    test: torch.Tensor
    train_rows: torch.Tensor

    @cached_property
    def train_probs(self) -> torch.Tensor:
        return self.train.softmax(1)

    @cached_property
    def test_probs(self) -> torch.Tensor:
        return self.test.softmax(1)

    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        positions = torch.searchsorted(self.train_rows, rows).clamp(max=max(len(self.train_rows) - 1, 0))
        if len(rows) and (not len(self.train_rows) or not torch.equal(self.train_rows[positions], rows)):
            raise ValueError("these outputs were computed on another subset of the training split")
        return positions

    def train_at(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits on the training samples `rows` (indices into the split), which must have been evaluated."""
        return self.train[self._positions(rows)]

    def train_probs_at(self, rows: torch.Tensor) -> torch.Tensor:
        return self.train_probs[self._positions(rows)]


@dataclass
class ShadowOutputs:
    """U-LIRA's attacker: logits [N, S, K] of N shadow originals unlearned with the method, and of N shadow
    retrained models, on the S forget training samples `rows`."""

    unlearned: torch.Tensor
    retrained: torch.Tensor
    rows: torch.Tensor


@dataclass
class ReferenceOutputs:
    """RMIA's reference models: logits [R, n, K] on training samples `train_rows` and [R, m, K] on the whole
    test split, with `train_in` [R, n] True where a reference trained on the sample."""

    train: torch.Tensor
    test: torch.Tensor
    train_rows: torch.Tensor
    train_in: torch.Tensor


@dataclass
class EvalOptions:
    """How to evaluate. Metric settings (MIA feature, shadow pairs, ...) are declared by the metrics themselves,
    with their defaults, and given here in `settings`."""

    metrics: Sequence[str] | None = None  # None: every metric registered as a default
    seed: int = 0  # one evaluation seed for every model of a comparison: same subsamples, same resamples
    train_samples: int = 0  # 0: the whole training split; N: a class-stratified subsample of N
    amp: bool = False  # run models in autocast for the metrics (faster, logits less exact)
    cache_dir: str | Path = ""  # where shadow and reference models are kept
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalOptions:
        """Options and metric settings in one flat mapping, as the CLI and config files give them."""
        own = {f.name for f in fields(cls)} - {"settings"}
        unknown = set(values) - own - set(SETTINGS)
        if unknown:
            raise ConfigError(f"unknown evaluation option(s) {sorted(unknown)}; known: "
                              f"{sorted(own | set(SETTINGS))}")
        return cls(**{k: v for k, v in values.items() if k in own},
                   settings={k: v for k, v in values.items() if k in SETTINGS})

    def setting(self, key: str) -> Any:
        if key not in SETTINGS:
            raise KeyError(f"no metric declares the setting {key!r}")
        return self.settings.get(key, SETTINGS[key])

    def metric_names(self) -> tuple[str, ...]:
        """The metrics to run, each checked to be registered."""
        names = tuple(self.metrics) if self.metrics else default_metrics()
        for name in names:
            get_metric(name)
        return names


@dataclass
class EvalContext:
    """Everything a metric may read. Shadow and reference models are trained (or loaded) only when a metric asks for
    their outputs on the samples it chooses, through the driver's providers."""

    dataset: ImageDataset
    forget: list[int]
    target: Outputs
    rows: torch.Tensor  # the training samples the train-split metrics use (sorted)
    options: EvalOptions
    original: Outputs | None = None
    retrained: list[Outputs] = field(default_factory=list)  # the first has the target's seed
    method: str | None = None  # the unlearning method that produced the target, where known
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    shadow_provider: Callable[[torch.Tensor], ShadowOutputs] | None = None
    reference_provider: Callable[[torch.Tensor], ReferenceOutputs] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where metrics compute in torch

    @property
    def seed(self) -> int:
        return self.options.seed

    def setting(self, key: str) -> Any:
        return self.options.setting(key)

    @cached_property
    def labels_train(self) -> torch.Tensor:
        return self.dataset.train_labels[self.rows]

    @cached_property
    def splits(self) -> ForgetSplits:
        """Forget/retain positions; `train_*` index `rows` (so `rows[splits.train_f]` are split indices)."""
        return ForgetSplits.from_labels(self.labels_train, self.dataset.test_labels, self.forget)

    @cached_property
    def forget_rows(self) -> torch.Tensor:
        """The forget-class training samples evaluated, as indices into the training split."""
        return self.rows[self.splits.train_f]

    def shadows_on(self, rows: torch.Tensor) -> ShadowOutputs:
        """U-LIRA's shadow models evaluated on the training samples `rows` (trained or taken from the cache)."""
        assert self.shadow_provider is not None, "check missing(metric.needs) first"
        return self.shadow_provider(rows)

    def references_on(self, rows: torch.Tensor) -> ReferenceOutputs:
        """RMIA's reference models evaluated on the training samples `rows` and on the test split."""
        assert self.reference_provider is not None, "check missing(metric.needs) first"
        return self.reference_provider(rows)

    def missing(self, needs: Sequence[str]) -> list[str]:
        have = {"original": self.original is not None, "retrained": bool(self.retrained),
                "shadows": self.shadow_provider is not None, "references": self.reference_provider is not None}
        return [need for need in needs if not have[need]]
