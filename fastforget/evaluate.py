"""Run models once per split and feed every metric: what `fastforget eval` and the benchmark grid compute.

Model outputs are computed once (`model_outputs`) and shared by all metrics, so the benchmark can evaluate many
methods against the same original and retrained outputs without recomputing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from fastforget import metrics
from fastforget.config import Config
from fastforget.data import ForgetSplits, ImageDataset
from fastforget.errors import ConfigError
from fastforget.inference import predict_logits
from fastforget.io import safe_name
from fastforget.shadows import reference_half, shadow_models

BASIC_METRICS = ("accuracy", "mia", "mia_nn", "utv", "reassignment")
ALL_METRICS = (*BASIC_METRICS, "ulira", "rmia")


@dataclass
class Outputs:
    """Logits of one model (fp32, CPU) on the training samples `train_rows` (sorted) and on the whole test split."""

    train: torch.Tensor
    test: torch.Tensor
    train_rows: torch.Tensor

    @cached_property
    def train_probs(self) -> torch.Tensor:
        return self.train.softmax(1)

    @cached_property
    def test_probs(self) -> torch.Tensor:
        return self.test.softmax(1)

    def train_probs_at(self, rows: torch.Tensor) -> torch.Tensor:
        """Probabilities on the training samples `rows` (indices into the split), which must have been evaluated."""
        positions = torch.searchsorted(self.train_rows, rows).clamp(max=len(self.train_rows) - 1)
        if not torch.equal(self.train_rows[positions], rows):
            raise ValueError("these outputs were computed on another subset of the training split")
        return self.train_probs[positions]


def train_rows(dataset: ImageDataset, limit: int) -> torch.Tensor:
    """The training samples the train-split metrics use: all, or a class-stratified `limit` of them.

    The subsample is seeded by the data set alone, so every model of an evaluation or a benchmark sees the same
    rows; the test split is always used whole.
    """
    labels = dataset.train_labels
    if not limit or limit >= len(labels):
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(0)
    picked = []
    for c in range(dataset.num_classes):
        members = torch.nonzero(labels == c).flatten()
        take = max(1, round(limit * len(members) / len(labels)))
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def model_outputs(model: nn.Module | Outputs, dataset: ImageDataset, rows: torch.Tensor | None = None,
                  batch_size: int = 512, amp: bool = False) -> Outputs:
    """Logits on `rows` of the training split (default: all) and on the test split; `amp` runs the model in
    bf16/fp16 autocast, about twice as fast on CPU, at the price of logits rounded to about three digits."""
    rows = torch.arange(len(dataset.train_labels)) if rows is None else rows
    if isinstance(model, Outputs):
        if not torch.equal(model.train_rows, rows):
            raise ValueError("outputs were computed on another subset of the training split than requested")
        return model
    return Outputs(train=predict_logits(model, dataset.train_images[rows], dataset, batch_size=batch_size, amp=amp),
                   test=predict_logits(model, dataset.test_images, dataset, batch_size=batch_size, amp=amp),
                   train_rows=rows)


@dataclass
class EvalOptions:
    metrics: Sequence[str] = BASIC_METRICS
    nearest: int | None = None          # MIA-NN's class n; default from the retrained (else original) model
    mia_feature: str = "confidence"
    mia_nn_protocol: str = "section3"
    max_per_side: int = 2000            # SVM training points per side, subsampled with `seed`
    seed: int = 0
    shadows: int = 2                    # U-LIRA shadow pairs
    reference_models: int = 2           # RMIA reference models
    max_attack_samples: int = 1000      # forget samples U-LIRA scores, per model
    max_train_samples: int = 10000      # train-split metrics on a stratified subsample (0: the whole split)
    amp: bool = False                   # run models in autocast for the metrics (faster, logits less exact)
    cache_dir: str | Path = ""          # where shadow and reference models are kept


def evaluate(
    model: nn.Module | Outputs,
    dataset: ImageDataset,
    forget: Sequence[int],
    *,
    original: nn.Module | Outputs | None = None,
    retrained: Sequence[nn.Module | Outputs] = (),
    options: EvalOptions | None = None,
) -> tuple[dict, dict[str, str]]:
    """The basic metrics of one model: returns (flat JSON-ready results, {skipped metric: reason}).

    U-LIRA and RMIA train models of their own: see `ulira_for_method` and `rmia_for_model`.
    """
    options = options or EvalOptions()
    unknown = set(options.metrics) - set(ALL_METRICS)
    if unknown:
        raise ConfigError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(ALL_METRICS)}")
    rows = train_rows(dataset, options.max_train_samples)
    out = model_outputs(model, dataset, rows, amp=options.amp)
    orig = model_outputs(original, dataset, rows, amp=options.amp) if original is not None else None
    retr = [model_outputs(r, dataset, rows, amp=options.amp) for r in retrained]
    labels_train = dataset.train_labels[rows]
    splits = ForgetSplits.from_labels(labels_train, dataset.test_labels, list(forget))  # train_* index `rows`
    results: dict = {"train_samples_evaluated": len(rows)}
    skipped: dict[str, str] = {}
    wanted = set(options.metrics)

    if "accuracy" in wanted:
        test = metrics.accuracy(out.test_probs, dataset.test_labels, forget)
        train = metrics.accuracy(out.train_probs, labels_train, forget)
        results |= {"acc_r_test": test.acc_r, "acc_f_test": test.acc_f, "acc_r_train": train.acc_r,
                    "acc_f_train": train.acc_f, "per_class_acc_test": test.per_class}
    if "mia" in wanted:
        m = metrics.mia(out.train_probs, labels_train, out.test_probs, dataset.test_labels, forget,
                        feature=options.mia_feature, max_per_side=options.max_per_side, seed=options.seed)
        results |= {"mia": m.score, "mia_feature": m.feature, "mia_attack_auc": m.attack_heldout_auc,
                    "mia_attack_balanced_accuracy": m.attack_heldout_balanced_accuracy,
                    "mia_n_per_side": m.n_per_side}
    if "mia_nn" in wanted:
        nearest, source = options.nearest, "given"
        if nearest is None and retr:
            nearest, source = metrics.nearest_class(retr[0].test_probs[splits.test_f], forget), "retrained"
        elif nearest is None and orig is not None:
            nearest = metrics.nearest_class(orig.test_probs[splits.test_f], forget, mode="highest_mean")
            source = "original"
        if nearest is None:
            skipped["mia_nn"] = "needs the nearest class: give --retrained, --original or --nearest"
        else:
            m = metrics.mia_nn(out.test_probs, dataset.test_labels, forget, nearest,
                               protocol=options.mia_nn_protocol, probs_train=out.train_probs,
                               labels_train=labels_train, max_per_side=options.max_per_side,
                               seed=options.seed)
            results |= {"mia_nn": m.score, "mia_nn_class": nearest, "mia_nn_class_name": dataset.classes[nearest],
                        "mia_nn_class_from": source, "mia_nn_protocol": m.protocol}
    if "utv" in wanted:
        if not retr:
            skipped["utv"] = "needs a retrained model of the same forget classes: give --retrained"
        else:
            for split, forget_rows in (("train", splits.train_f), ("test", splits.test_f)):
                retrained_probs = [getattr(r, f"{split}_probs")[forget_rows] for r in retr]
                u = metrics.utv(getattr(out, f"{split}_probs")[forget_rows], retrained_probs)
                results[f"utv_{split}"] = u.utv
                if u.floor is not None:
                    results[f"utv_floor_{split}"] = u.floor
                if orig is not None:  # how close the RWFT target itself is: fine-tuning cannot beat it
                    t = metrics.target_utv(getattr(orig, split)[forget_rows], retrained_probs, forget)
                    results[f"utv_target_{split}"] = t.utv
    if "reassignment" in wanted:
        r = metrics.reassignment(out.test_probs, dataset.test_labels, forget,
                                 probs_original=orig.test_probs if orig is not None else None)
        moved = r.as_dict()
        results["reassignment"] = {"reassigned": moved["reassigned"], "accuracy_drop": moved["accuracy_drop"]}
        results["confusion_test"] = moved["confusion"]
    return results, skipped


def _forget_rows(evaluated: torch.Tensor, dataset: ImageDataset, forget: Sequence[int], limit: int,
                 seed: int) -> torch.Tensor:
    """Up to `limit` forget-class training samples among those evaluated (seeded), sorted."""
    rows = evaluated[torch.isin(dataset.train_labels[evaluated], torch.tensor(list(forget)))]
    if len(rows) > limit:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:limit]].sort().values
    return rows


def ulira_for_method(
    model: nn.Module | Outputs,
    method: str,
    hyperparameters: dict,
    cfg: Config,
    dataset: ImageDataset,
    forget: Sequence[int],
    *,
    retrained: nn.Module | Outputs | None = None,
    options: EvalOptions,
) -> dict:
    """U-LIRA: shadow originals (cached) unlearned with `method`, against shadow retrained models (cached)."""
    from fastforget.unlearn import UnlearnContext, run_method

    out = model_outputs(model, dataset, train_rows(dataset, options.max_train_samples))
    rows = _forget_rows(out.train_rows, dataset, forget, options.max_attack_samples, options.seed)
    images, labels = dataset.train_images[rows], dataset.train_labels[rows]
    originals = shadow_models(cfg, dataset, kind="original", count=options.shadows, cache_dir=options.cache_dir)
    retrained_shadows = shadow_models(cfg, dataset, kind="retrained", count=options.shadows,
                                      cache_dir=options.cache_dir, forget=forget)
    device = next(originals[0].parameters()).device
    unlearned = []
    for i, shadow in enumerate(originals):
        meta = {"label_smoothing": cfg.train.label_smoothing, "seed": i}
        ctx = UnlearnContext(original=shadow, meta=meta, dataset=dataset, forget=list(forget), cfg=cfg, device=device,
                             seed=i)
        unlearned.append(run_method(method, ctx, hyperparameters).model)

    def probs(models: Sequence[nn.Module]) -> torch.Tensor:
        return torch.stack([predict_logits(m, images, dataset).softmax(1) for m in models])

    target = out.train_probs_at(rows)
    target_retrained = model_outputs(retrained, dataset, out.train_rows).train_probs_at(rows) \
        if retrained is not None else None
    result = metrics.ulira(probs(unlearned), probs(retrained_shadows), labels, target=target,
                           target_retrained=target_retrained)
    return {"ulira": result.target_accuracy, "ulira_balanced_accuracy": result.target_balanced_accuracy,
            "ulira_shadow_balanced_accuracy": result.balanced_accuracy, "ulira_pairs": result.n_pairs,
            "ulira_samples": result.n_samples}


def rmia_for_model(model: nn.Module | Outputs, cfg: Config, dataset: ImageDataset, forget: Sequence[int], *,
                   options: EvalOptions) -> dict:
    """RMIA AUCs (D_train_f vs D_test_f, D_train_r vs D_test_r) with reference models on random halves."""
    out = model_outputs(model, dataset, train_rows(dataset, options.max_train_samples))
    references = shadow_models(cfg, dataset, kind="half", count=options.reference_models, cache_dir=options.cache_dir)
    splits = ForgetSplits.from_labels(dataset.train_labels[out.train_rows], dataset.test_labels, list(forget))
    generator = torch.Generator().manual_seed(options.seed)
    cap = options.max_per_side
    test_r = splits.test_r[torch.randperm(len(splits.test_r), generator=generator)]
    population, test_r_eval = test_r[: len(test_r) // 2], test_r[len(test_r) // 2:][:cap]
    train_r = out.train_rows[splits.train_r[torch.randperm(len(splits.train_r), generator=generator)[:cap]]]
    train_f, test_f = out.train_rows[splits.train_f[:cap]], splits.test_f[:cap]
    x_train = torch.cat([train_f, train_r])
    test_rows = torch.cat([test_f, test_r_eval, population])
    ref_train = torch.stack([predict_logits(m, dataset.train_images[x_train], dataset).softmax(1)
                             for m in references])
    ref_test = torch.stack([predict_logits(m, dataset.test_images[test_rows], dataset).softmax(1)
                            for m in references])
    halves = torch.stack([reference_half(len(dataset.train_labels), i)[x_train]
                          for i in range(len(references))])
    n_x_test = len(test_f) + len(test_r_eval)
    target_x = torch.cat([out.train_probs_at(x_train), out.test_probs[test_rows[:n_x_test]]])
    labels_x = torch.cat([dataset.train_labels[x_train], dataset.test_labels[test_rows[:n_x_test]]])
    members_x = torch.cat([torch.ones(len(x_train), dtype=torch.bool), torch.zeros(n_x_test, dtype=torch.bool)])
    reference_x = torch.cat([ref_train, ref_test[:, :n_x_test]], dim=1)
    reference_in_x = torch.cat([halves, torch.zeros(len(references), n_x_test, dtype=torch.bool)], dim=1)
    # Offline: the references never train on test samples, so "online" would estimate Pr(x) from IN models for the
    # training samples only and from the offline formula for the unseen ones, a difference that itself tells them
    # apart (measured: AUC 0.96 for a digits model with equal train and test accuracy; 0.53 offline).
    result = metrics.rmia(target_x, labels_x, members_x, reference_x, out.test_probs[population],
                          dataset.test_labels[population], ref_test[:, n_x_test:], forget,
                          reference_in_x=reference_in_x.numpy(), mode="offline")
    d = result.as_dict()
    return {"rmia_auc_f": d["forget"]["auc"], "rmia_auc_r": d["retain"]["auc"],
            "rmia_tpr_at_1pct_fpr_f": d["forget"]["tpr_at_1pct_fpr"],
            "rmia_tpr_at_1pct_fpr_r": d["retain"]["tpr_at_1pct_fpr"], "rmia_reference_models": len(references)}


def write_plots(plots_dir: str | Path, dataset: ImageDataset, forget: Sequence[int], unlearned: Outputs, *,
                original: Outputs | None = None, retrained: Outputs | None = None,
                method: str = "unlearned") -> list[Path]:
    """On the test split: confusion matrices (original / unlearned / retrained side by side), where each forget
    class goes (the unlearned model beside the retrained one) and, with the original, the per-class accuracy drop."""
    from fastforget.metrics import plots

    plots_dir = Path(plots_dir)
    labels = dataset.test_labels
    models = {name: out for name, out in (("original", original), (method, unlearned), ("retrained", retrained))
              if out is not None}
    matrices = {name: metrics.confusion_matrix(labels, out.test.argmax(1), dataset.num_classes)
                for name, out in models.items()}
    forgotten = ", ".join(dataset.classes[i] for i in forget)
    paths = [plots.plot_confusion_matrices(matrices, plots_dir / "confusion.png", class_names=dataset.classes,
                                           title=f"Confusion matrices: {forgotten} forgotten by {method}, test split, "
                                                 f"{dataset.name}")]
    compared = {name: metrics.reassignment(out.test_probs, labels, forget,
                                           probs_original=original.test_probs if original is not None else None)
                for name, out in models.items() if name != "original"}
    for moved in compared[method].reassigned:
        shown = {name: r for name, result in compared.items() for r in result.reassigned
                 if r.forget_class == moved.forget_class}
        name = dataset.classes[moved.forget_class]
        paths.append(plots.plot_where_it_goes(
            shown, plots_dir / f"reassignment_{safe_name(name)}.png", class_names=dataset.classes,
            title=f"Where {name} goes: {' beside '.join(shown)}\ntest split, {dataset.name}"))
    drops = {name: [(d.class_index, d.drop) for d in result.accuracy_drop]
             for name, result in compared.items() if result.accuracy_drop}
    if drops:
        paths.append(plots.plot_accuracy_drop(
            drops, plots_dir / "accuracy_drop.png", class_names=dataset.classes,
            title=f"Retained classes' accuracy drop, {forgotten} forgotten\ntest split, {dataset.name}"))
    return paths


def save_per_sample(path: str | Path, dataset: ImageDataset, forget: Sequence[int], unlearned: Outputs, *,
                    original: Outputs | None = None, retrained: Sequence[Outputs] = (), mia_feature: str = "confidence",
                    nearest: int | None = None) -> Path:
    """Everything per sample that the metrics were computed from, as one `.npz` (written whole or not at all), so
    results can be re-analysed without running the models again.

    Arrays: `train_rows` (positions in the training split), `train_labels`, `test_labels`, `forget`, `classes`;
    per model (`unlearned`, `original`, `retrained0`, ...): `MODEL_train_logits`, `MODEL_test_logits` [N, K] float32,
    `MODEL_train_mia`, `MODEL_test_mia` (the MIA's per-sample feature, `mia_feature`) and, where MIA-NN ran,
    `MODEL_train_mia_nn`, `MODEL_test_mia_nn` (the probability of its nearest class `nearest`).
    """
    import numpy as np

    from fastforget.io import atomic_path
    from fastforget.metrics.mia import membership_feature

    train_labels = dataset.train_labels[unlearned.train_rows].numpy()
    arrays: dict[str, np.ndarray] = {
        "train_rows": unlearned.train_rows.numpy(), "train_labels": train_labels,
        "test_labels": dataset.test_labels.numpy(), "forget": np.asarray(list(forget), dtype=np.int64),
        "classes": np.asarray(dataset.classes), "mia_feature": np.asarray(mia_feature),
        "mia_nn_class": np.asarray(-1 if nearest is None else nearest),
    }
    models = {"unlearned": unlearned, "original": original, **{f"retrained{i}": r for i, r in enumerate(retrained)}}
    for name, out in models.items():
        if out is None:
            continue
        for split, logits, labels in (("train", out.train, train_labels), ("test", out.test, arrays["test_labels"])):
            probs = logits.softmax(1).double().numpy()
            arrays[f"{name}_{split}_logits"] = logits.numpy()
            arrays[f"{name}_{split}_mia"] = membership_feature(probs, labels, mia_feature)
            if nearest is not None:
                arrays[f"{name}_{split}_mia_nn"] = probs[:, nearest]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)
