"""The measurements behind the U-LIRA and RMIA defaults (bench/README.md, "Attack protocols"), on digits.

    python bench/attack_protocols.py --out runs/attack-protocols [--config digits] [--forget 3]

U-LIRA N-curve: a pool of 8 shadow pairs (originals, retrained without the forget class) is trained once; for each
target (the original itself, a retrained model of another seed, and unlearned models) and each N, the balanced
accuracy is computed over every N-subset of the pool (up to 20, seeded), plus the target's own pair. The spread
over subsets is what N buys: a default N must give a headline that does not depend on which shadows were drawn.

RMIA comparison: the same targets against 2, 4 and 8 reference models on paired random halves, with `a` tuned on
the references and with the paper's CIFAR-10 value 0.3.

Writes OUT/attack_protocols.json (and every model's logits, OUT/logits.pt) and prints the markdown tables.
Shadow and reference models are cached like every other (FASTFORGET_CACHE), so a rerun, or the digits benchmark
afterwards, reuses them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from fastforget import api
from fastforget.config import load_config
from fastforget.data import load_dataset, resolve_classes
from fastforget.data.sources import cache_dir
from fastforget.evaluate import AttackSetup, forget_rows, model_outputs, train_rows
from fastforget.metrics import rmia, ulira
from fastforget.runtime import environment, resolve_device
from fastforget.shadows import reference_half, replay_seed
from fastforget.train import predict_logits, train_model

POOL = 8
CURVE = (2, 3, 4, 6, 8)
SUBSETS = 20
REFERENCES = (2, 4, 8)
TARGETS = ("original", "retrain", "rwft-2-o", "rw-a", "rw-mask", "ga")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="digits")
    parser.add_argument("--forget", default="3")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    dataset = load_dataset(cfg.data["name"], cfg.data.get("root") or None)
    forget = resolve_classes([args.forget], dataset.classes)
    device = resolve_device(cfg.train.device)
    setup = AttackSetup(cfg, cache_dir())

    original = train_model(cfg, seed=0, dataset=dataset).model
    retrained = train_model(cfg, seed=0, exclude=forget, dataset=dataset).model
    rows = forget_rows(dataset, train_rows(dataset), forget)
    labels = dataset.train_labels[rows]
    shadow_originals = setup.models(dataset, "original", POOL)
    shadow_retrained = setup.models(dataset, "retrained", POOL, forget)

    def logits(models) -> torch.Tensor:
        return torch.stack([predict_logits(m, dataset.train_images[rows], dataset) for m in models])

    retrained_logits = logits(shadow_retrained)
    retrained_target = logits([retrained])[0]
    targets, curve = {}, {}
    saved = {"rows": rows, "retrained_shadows": retrained_logits, "retrained_target": retrained_target}
    for method in TARGETS:
        replay = api.method_replay(method, {}, cfg, dataset, forget, device)
        targets[method] = replay(original, 1)  # seed 1: the retrain target is not the seed-0 retrained model
        unlearned_logits = logits([replay(m, replay_seed(i)) for i, m in enumerate(shadow_originals)])
        target_logits = logits([targets[method]])[0]
        saved[f"{method}/unlearned_shadows"], saved[f"{method}/target"] = unlearned_logits, target_logits
        curve[method] = {}
        for n in CURVE:
            subsets = list(itertools.combinations(range(POOL), n))
            picks = np.random.default_rng(n).permutation(len(subsets))[:SUBSETS]
            scores = []
            for pick in picks:
                subset = list(subsets[pick])
                result = ulira(unlearned_logits[subset], retrained_logits[subset], labels, target=target_logits,
                               target_retrained=retrained_target, from_logits=True)
                scores.append(result.balanced_accuracy)
            curve[method][n] = {"median": float(np.median(scores)), "min": float(min(scores)),
                                "max": float(max(scores)), "subsets": len(scores),
                                "ci_first_subset": ulira(unlearned_logits[list(subsets[picks[0]])],
                                                         retrained_logits[list(subsets[picks[0]])], labels,
                                                         target=target_logits, target_retrained=retrained_target,
                                                         from_logits=True).balanced_accuracy_ci}
        print(method, {n: round(v["median"], 1) for n, v in curve[method].items()}, flush=True)

    references = setup.models(dataset, "half", max(REFERENCES))
    evaluated = train_rows(dataset)
    n_train, n_test = len(evaluated), len(dataset.test_labels)
    reference_logits = torch.stack([torch.cat([predict_logits(m, dataset.train_images[evaluated], dataset),
                                               predict_logits(m, dataset.test_images, dataset)])
                                    for m in references])
    reference_in = torch.stack([torch.cat([reference_half(len(dataset.train_labels), i)[evaluated],
                                           torch.zeros(n_test, dtype=torch.bool)]) for i in range(len(references))])
    labels_x = torch.cat([dataset.train_labels[evaluated], dataset.test_labels])
    members = torch.cat([torch.ones(n_train, dtype=torch.bool), torch.zeros(n_test, dtype=torch.bool)])
    comparison = {}
    saved |= {"references": reference_logits, "reference_in": reference_in, "labels_x": labels_x, "members": members}
    for method, model in targets.items():
        out = model_outputs(model, dataset, evaluated)
        target_x = torch.cat([out.train, out.test])
        saved[f"{method}/target_x"] = target_x
        comparison[method] = {}
        for count in REFERENCES:
            for a in (None, 0.3):
                result = rmia(target_x, labels_x, members, reference_logits[:count], forget,
                              reference_in_x=reference_in[:count], a=a, from_logits=True)
                comparison[method][f"R={count}, a={'tuned' if a is None else a}"] = {
                    "a": result.a, "auc_f": result.forget.auc, "tpr_f": result.forget.tpr_at_1pct_fpr,
                    "auc_r": result.retain.auc, "tpr_r": result.retain.tpr_at_1pct_fpr}
        print(method, comparison[method]["R=4, a=tuned"], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"config": cfg.raw, "forget": forget, "pool": POOL, "curve": curve, "rmia": comparison,
              "seconds": time.perf_counter() - started, "versions": environment(device)}
    (args.out / "attack_protocols.json").write_text(json.dumps(report, indent=2) + "\n")
    torch.save(saved, args.out / "logits.pt")  # every model's outputs, to recompute any other protocol offline
    print_tables(report)


def print_tables(report: dict) -> None:
    print("\n| target | " + " | ".join(f"N={n}" for n in CURVE) + " |")
    print("|---|" + "---:|" * len(CURVE))
    for method, by_n in report["curve"].items():
        cells = [f"{v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f})" if v["subsets"] > 1 else
                 f"{v['median']:.1f} (one draw)" for v in by_n.values()]
        print(f"| {method} | " + " | ".join(cells) + " |")
    settings = list(next(iter(report["rmia"].values())))
    print("\n| target | " + " | ".join(settings) + " |")
    print("|---|" + "---|" * len(settings))
    for method, by_setting in report["rmia"].items():
        cells = [f"{v['auc_f']:.3f} / {v['tpr_f']:.3f} / {v['auc_r']:.3f}" for v in by_setting.values()]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
