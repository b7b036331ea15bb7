"""The models an audit measures against, trained when not given: cached, resumable, with an up-front estimate.

Two retrained seeds give the floor (with the model's own seed first, the one UTV compares with; a retrained model
under audit is compared with two other seeds). U-LIRA's shadow pairs and RMIA's reference models come from
`fastforget.shadows`, whose cache this shares. Every model is written whole into its cache folder as it finishes,
so a killed audit resumes from the models it completed. The estimate uses the training time recorded in the
original's sidecar (a model of a retained-class subset takes its share of that time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastforget.checkpoint import read_sidecar
from fastforget.config import Config
from fastforget.data import ImageDataset
from fastforget.metrics.registry import METRICS
from fastforget.shadows import ShadowSpec, load_cached, recipe_key, shadow_specs
from fastforget.train import train_model

RETRAINED_REFERENCES = 2


@dataclass
class Step:
    """One kind of model the audit needs."""

    what: str
    needed: int
    to_train: int
    seconds_each: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_each is None else self.to_train * self.seconds_each


@dataclass
class ReferencePlan:
    steps: list[Step] = field(default_factory=list)
    retrained_seeds: list[int] = field(default_factory=list)  # retrained references to train or load

    @property
    def to_train(self) -> int:
        return sum(step.to_train for step in self.steps)

    @property
    def seconds(self) -> float | None:
        known = [step.seconds for step in self.steps if step.to_train]
        return None if any(s is None for s in known) else sum(known)

    def describe(self) -> str:
        """One line for the user before any work starts."""
        if not self.to_train:
            return "audit: every reference model is cached or given; nothing to train"
        parts = ", ".join(f"{s.to_train} {s.what}" for s in self.steps if s.to_train)
        seconds = self.seconds
        eta = f"about {_duration(seconds)}" if seconds is not None else "time unknown (no training time recorded)"
        return (f"audit: {self.to_train} models to train or replay ({parts}): {eta}; trained ones are cached, rerun "
                "to resume")

    def as_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "retrained_seeds": self.retrained_seeds,
                "to_train": self.to_train, "estimated_seconds": self.seconds}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def retrained_folder(cfg: Config, dataset: ImageDataset, forget: Sequence[int], seed: int, cache_dir: str | Path
                     ) -> Path:
    tag = "-".join(map(str, sorted(forget)))
    return Path(cache_dir) / "audit" / f"{dataset.name}-{recipe_key(cfg)}" / f"retrained-{tag}-s{seed}"


def reference_seeds(target_seed: int, target_is_retrained: bool, count: int = RETRAINED_REFERENCES) -> list[int]:
    """The model's own seed first (UTV compares with it); a retrained model under audit gets other seeds, so that
    it is compared with retraining, not with itself."""
    first = target_seed + 1 if target_is_retrained else target_seed
    return list(range(first, first + count))


def plan_references(cfg: Config, dataset: ImageDataset, forget: Sequence[int], metric_names: Sequence[str], *,
                    settings: Callable[[str], int], cache_dir: str | Path, retrained_seeds: Sequence[int],
                    original_meta: dict, replay_seconds: float | None) -> ReferencePlan:
    """What the audit will train, and how long that should take. `replay_seconds`: one replay of the method on a
    shadow original (U-LIRA)."""
    base = original_meta.get("train_seconds")
    share_retained = float((~_is_forget(dataset, forget)).float().mean())

    def each(share: float) -> float | None:
        return None if base is None else base * share

    plan = ReferencePlan(retrained_seeds=list(retrained_seeds))
    missing = [s for s in retrained_seeds
               if not (retrained_folder(cfg, dataset, forget, s, cache_dir) / "model.json").is_file()]
    if retrained_seeds:
        plan.steps.append(Step("retrained references", len(retrained_seeds), len(missing), each(share_retained)))
    needs = {need for name in metric_names for need in METRICS[name].needs}
    if "shadows" in needs:
        count = settings("shadows")
        for kind, share in (("original", 1.0), ("retrained", share_retained)):
            cached = sum(spec.fits() for spec in shadow_specs(cfg, dataset, kind=kind, count=count,
                                                              cache_dir=cache_dir, forget=forget))
            plan.steps.append(Step(f"U-LIRA shadow {kind}", count, count - cached, each(share)))
        plan.steps.append(Step("U-LIRA method replays", count, count if replay_seconds else 0, replay_seconds))
    if "references" in needs:
        count = settings("reference_models")
        cached = sum(spec.fits() for spec in shadow_specs(cfg, dataset, kind="half", count=count,
                                                          cache_dir=cache_dir))
        plan.steps.append(Step("RMIA references", count, count - cached, each(0.5)))
    return plan


def _is_forget(dataset: ImageDataset, forget: Sequence[int]) -> torch.Tensor:
    return torch.isin(dataset.train_labels, torch.tensor(list(forget)))


def retrained_references(cfg: Config, dataset: ImageDataset, forget: Sequence[int], seeds: Sequence[int],
                         cache_dir: str | Path) -> list[tuple[Path, nn.Module, dict]]:
    """Retrained models of these seeds, from the cache or trained into it: (folder, model, sidecar) each."""
    references = []
    for seed in seeds:
        folder = retrained_folder(cfg, dataset, forget, seed, cache_dir)
        model = load_cached(ShadowSpec(folder, "retrained", 0, seed, tuple(sorted(forget))))
        if model is None:
            model = train_model(cfg, exclude=list(forget), seed=seed, dataset=dataset, out_dir=folder,
                                desc=f"audit retrained s{seed}").model.eval()
        references.append((folder, model, read_sidecar(folder)))
    return references
