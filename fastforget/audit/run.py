"""One audit: every registered metric on the model and on the retrained references, the white-box checks, the
verdicts, and the record of how it was all computed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastforget.audit.references import plan_references, retrained_references
from fastforget.audit.verdicts import (
    Verdict,
    apply_control,
    judge,
    needs_retrained_values,
    output_verdicts,
    overall,
)
from fastforget.audit.whitebox import ProbeResult, linear_probe, weight_change
from fastforget.config import Config
from fastforget.data import ImageDataset, data_fingerprint
from fastforget.evaluate import AttackSetup, Replay, model_outputs, train_rows
from fastforget.evaluate import evaluate as compute_metrics
from fastforget.metrics.registry import METRICS, EvalOptions
from fastforget.runtime import environment

Echo = Callable[[str], None]


@dataclass
class Model:
    """A model taking part in the audit, with where it came from."""

    role: str  # "audited", "original", "retrained"
    model: nn.Module
    meta: dict
    path: Path | None = None

    def provenance(self) -> dict[str, Any]:
        return {"role": self.role, "path": str(self.path) if self.path else None,
                "weights_sha256": self.meta.get("weights_sha256"), "seed": self.meta.get("seed"),
                "method": self.meta.get("method"), "excluded": self.meta.get("excluded", [])}


def run_audit(target: Model, original: Model, retrained: Sequence[Model], *, cfg: Config, dataset: ImageDataset,
              forget: Sequence[int], method: str, options: EvalOptions, replay: Replay | None,
              retrained_seeds: Sequence[int], device: torch.device, probe: dict[str, int] | None = None,
              echo: Echo = lambda line: None) -> dict[str, Any]:
    """The audit report as a JSON-ready dict (see `fastforget.audit`). `retrained` given, or trained with
    `retrained_seeds`; `replay` replays the method on U-LIRA's shadow originals."""
    start = time.perf_counter()
    forget = list(forget)
    names = options.metric_names()
    plan = plan_references(cfg, dataset, forget, names, settings=options.setting, cache_dir=options.cache_dir,
                           retrained_seeds=[] if retrained else retrained_seeds, original_meta=original.meta,
                           replay_seconds=_replay_seconds(method, target.meta, original.meta))
    echo(plan.describe())
    references_start = time.perf_counter()
    if not retrained:
        echo(f"audit: retrained references, seeds {', '.join(map(str, retrained_seeds))}")
        retrained = [Model("retrained", m, meta, folder) for folder, m, meta in
                     retrained_references(cfg, dataset, forget, retrained_seeds, options.cache_dir)]
    attack = AttackSetup(cfg, options.cache_dir, replay)
    _train_attack_models(attack, dataset, forget, names, options, echo)
    references_seconds = time.perf_counter() - references_start  # beside the estimate (replays come later)

    echo("audit: model outputs")
    rows = train_rows(dataset, options.train_samples, options.seed)
    outputs = {id(m): model_outputs(m.model, dataset, rows, amp=options.amp) for m in (target, original, *retrained)}
    yardsticks = [outputs[id(r)] for r in retrained]
    echo(f"audit: {len(names)} metrics on the audited model ({', '.join(names)})")
    results, skipped = compute_metrics(outputs[id(target)], dataset, forget, original=outputs[id(original)],
                                       retrained=yardsticks, options=options, method=method,
                                       hyperparameters=target.meta.get("hyperparameters", {}), attack=attack,
                                       device=device)
    reference_names = [n for n in names if n not in skipped and needs_retrained_values(METRICS[n])]
    reference_options = _with_metrics(options, reference_names)
    retrained_results = []
    for r in retrained:
        echo(f"audit: the same metrics on retrained seed {r.meta.get('seed')} ({', '.join(reference_names)})")
        values, _ = compute_metrics(outputs[id(r)], dataset, forget, original=outputs[id(original)],
                                    retrained=yardsticks, options=reference_options, method="retrain",
                                    attack=attack.for_method(None), device=device)
        retrained_results.append(values)
    ran = [n for n in names if n not in skipped]
    untested: dict[str, str] = {}
    verdicts = output_verdicts(ran, results, retrained_results, untested)
    if _same_weights(target, original):
        control_results = results
    else:
        echo(f"audit: the same metrics on the original, the positive control ({', '.join(ran)})")
        control_results, _ = compute_metrics(outputs[id(original)], dataset, forget, original=outputs[id(original)],
                                             retrained=yardsticks, options=_with_metrics(options, ran),
                                             method="original", attack=attack.for_method(lambda model, seed: model),
                                             device=device)
    control = output_verdicts(ran, control_results, retrained_results)

    echo("audit: white-box checks (weights, linear probe on the penultimate features)")
    whitebox, whitebox_verdicts, whitebox_control = _whitebox(target, original, retrained, dataset, forget,
                                                              options.seed, probe or {})
    verdicts += whitebox_verdicts
    apply_control(verdicts, control + whitebox_control)
    answer, exit_code = overall(verdicts)
    return {
        "schema": "fastforget.audit/1",
        "question": f"is {', '.join(dataset.classes[i] for i in forget)} gone from the model?",
        "answer": answer,
        "exit_code": exit_code,
        "tests": [v.as_dict() for v in verdicts],
        "skipped": skipped,
        "untested": untested,
        "dataset": dataset.name, "classes": dataset.classes, "forget": forget,
        "forget_names": [dataset.classes[i] for i in forget], "method": method,
        "results": results,
        "retrained_results": retrained_results,
        "original_results": control_results,
        "whitebox": whitebox,
        "references": plan.as_dict() | {"seconds_training_or_loading": references_seconds},
        "provenance": {
            "models": [m.provenance() for m in (target, original, *retrained)],
            "data_fingerprint": data_fingerprint(dataset),
            "config": cfg.raw,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
            "probe": probe or {},
            "versions": environment(device),
            "device": str(device),
            "wall_seconds": time.perf_counter() - start,
        },
    }


def _with_metrics(options: EvalOptions, names: Sequence[str]) -> EvalOptions:
    return EvalOptions(**{**vars(options), "metrics": tuple(names)})


def _replay_seconds(method: str, target_meta: dict, original_meta: dict) -> float | None:
    """One replay of the method on a shadow original: as long as the audited model's own run took."""
    if method == "original":
        return 0.0
    if method == "retrain":
        seconds = target_meta.get("train_seconds") or original_meta.get("train_seconds")
        return float(seconds) if seconds is not None else None
    return target_meta.get("wall_seconds")


def _train_attack_models(attack: AttackSetup, dataset: ImageDataset, forget: Sequence[int], names: Sequence[str],
                         options: EvalOptions, echo: Echo) -> None:
    """Train (or load) U-LIRA's shadows and RMIA's references now, with the plan's progress, not inside a metric."""
    needs = {need for name in names for need in METRICS[name].needs}
    if "shadows" in needs and attack.replay is not None:
        count = options.setting("shadows")
        echo(f"audit: U-LIRA shadow models ({count} original, {count} retrained)")
        attack.models(dataset, "original", count)
        attack.models(dataset, "retrained", count, forget)
    if "references" in needs:
        count = options.setting("reference_models")
        echo(f"audit: RMIA reference models ({count})")
        attack.models(dataset, "half", count)


def _same_weights(a: Model, b: Model) -> bool:
    return a.meta.get("weights_sha256") is not None and a.meta.get("weights_sha256") == b.meta.get("weights_sha256")


def _probe_verdict(result: ProbeResult, retrained: Sequence[ProbeResult]) -> Verdict | None:
    return judge(key="probe_acc_f", label="probe ACC_f %", metric="white-box", better="lower",
                 value=result.accuracy_f, interval=result.accuracy_f_ci, kind="white-box",
                 yardsticks=[tuple(p.accuracy_f_ci) for p in retrained],
                 source="the same probe on the retrained models")


def _whitebox(target: Model, original: Model, retrained: Sequence[Model], dataset: ImageDataset,
              forget: Sequence[int], seed: int, probe: dict[str, int]
              ) -> tuple[dict, list[Verdict], list[Verdict]]:
    """The details, the verdicts, and the original's verdicts on the probe (the positive control)."""
    change = weight_change(target.model, original.model)
    retrained_change = [weight_change(r.model, original.model) for r in retrained]
    share = 100.0 * change.identical / change.tensors if change.tensors else 0.0
    weights = Verdict(
        key="weights_identical", label="original weights kept bit-identical %", metric="white-box", kind="white-box",
        concern="forget", value=share, interval=None, threshold=100.0,
        test="below 100: not every weight of the original survives unchanged (else removing a wrapper or the "
             "added layers gives the original back)",
        verdict="leaks" if change.all_identical else "indistinguishable from retraining",
        excess=0.0 if change.all_identical else None,
        yardstick={"kind": "retrained", "values": [100.0 * c.identical / c.tensors if c.tensors else 0.0
                                                   for c in retrained_change]})
    probed = linear_probe(target.model, dataset, forget, seed=seed, **probe)
    retrained_probes = [linear_probe(r.model, dataset, forget, seed=seed, **probe) for r in retrained]
    original_probe = probed if _same_weights(target, original) else linear_probe(original.model, dataset, forget,
                                                                                  seed=seed, **probe)
    verdict, control = _probe_verdict(probed, retrained_probes), _probe_verdict(original_probe, retrained_probes)
    details = {"weights": change.as_dict(), "weights_retrained": [c.as_dict() for c in retrained_change],
               "probe": probed.as_dict(), "probe_retrained": [p.as_dict() for p in retrained_probes],
               "probe_original": original_probe.as_dict()}
    return details, [v for v in (weights, verdict) if v is not None], [control] if control is not None else []
