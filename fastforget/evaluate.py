"""Run models once per split and feed every registered metric: what `fastforget eval` and the benchmark compute.

Model outputs are computed once (`model_outputs`) and shared by all metrics, so the benchmark can evaluate many
methods against the same original and retrained outputs without recomputing them. The metrics themselves, what
they need and what they report, come from the registry (`fastforget.metrics.registry`); this module only gathers
their inputs. Shadow (U-LIRA) and reference (RMIA) models are set up here once for `api.evaluate` and the
benchmark alike (`AttackSetup`); the unlearning method that U-LIRA replays on its shadows arrives as a callable,
so evaluation never imports the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastforget import metrics
from fastforget.config import Config
from fastforget.data import ImageDataset
from fastforget.inference import predict_logits
from fastforget.io import safe_name
from fastforget.metrics.registry import (
    NEEDS,
    EvalContext,
    EvalOptions,
    Outputs,
    ReferenceOutputs,
    ShadowOutputs,
    Skip,
    get_metric,
)
from fastforget.shadows import reference_half, replay_seed, shadow_models

Replay = Callable[[nn.Module, int], nn.Module]
"""replay(shadow original, seed) -> that shadow unlearned with the method under test."""


def train_rows(dataset: ImageDataset, limit: int = 0, seed: int = 0) -> torch.Tensor:
    """The training samples the train-split metrics use: all (the default), or a class-stratified `limit`.

    The subsample is seeded by the evaluation seed, so every model of an evaluation or a benchmark sees the same
    rows; the test split is always used whole.
    """
    labels = dataset.train_labels
    if not limit or limit >= len(labels):
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(dataset.num_classes):
        members = torch.nonzero(labels == c).flatten()
        take = max(1, round(limit * len(members) / len(labels)))
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def forget_rows(dataset: ImageDataset, rows: torch.Tensor, forget: Sequence[int]) -> torch.Tensor:
    """The forget-class samples among training `rows`: all that a yardstick model (original, retrained) needs."""
    return rows[torch.isin(dataset.train_labels[rows], torch.tensor(list(forget)))]


def model_outputs(model: nn.Module | Outputs, dataset: ImageDataset, rows: torch.Tensor | None = None,
                  batch_size: int = 512, amp: bool = False) -> Outputs:
    """Logits on `rows` of the training split (default: all) and on the test split; `amp` runs the model in
    bf16/fp16 autocast, about twice as fast on CPU, at the price of logits rounded to about three digits.
    Outputs computed before are returned as they are if they cover `rows`."""
    rows = torch.arange(len(dataset.train_labels)) if rows is None else rows
    if isinstance(model, Outputs):
        model.train_at(rows)  # raises if some of `rows` were not evaluated
        return model
    return Outputs(train=predict_logits(model, dataset.train_images[rows], dataset, batch_size=batch_size, amp=amp),
                   test=predict_logits(model, dataset.test_images, dataset, batch_size=batch_size, amp=amp),
                   train_rows=rows)


@dataclass
class AttackSetup:
    """What U-LIRA and RMIA need to train (or reuse) their models: the recipe, where to cache them, and the
    method to replay on U-LIRA's shadow originals. Models and their outputs are kept in memory once built, so a
    benchmark shares one setup across its cells, each with its own `replay` (`for_method`)."""

    cfg: Config
    cache_dir: str | Path
    replay: Replay | None = None
    _models: dict = field(default_factory=dict, repr=False)
    _outputs: dict = field(default_factory=dict, repr=False)
    train_missing: bool = True  # off in the benchmark's cells: tasks of their own train these models

    def for_method(self, replay: Replay | None) -> AttackSetup:
        return AttackSetup(self.cfg, self.cache_dir, replay, self._models, self._outputs, self.train_missing)

    def models(self, dataset: ImageDataset, kind: str, count: int, forget: Sequence[int] = ()) -> list[nn.Module]:
        key = (kind, count, tuple(sorted(forget)) if kind == "retrained" else ())
        if key not in self._models:
            self._models[key] = shadow_models(self.cfg, dataset, kind=kind, count=count, cache_dir=self.cache_dir,
                                              forget=forget, train_missing=self.train_missing)
        return self._models[key]

    def logits(self, key: tuple, models: Sequence[nn.Module], images: torch.Tensor,
               dataset: ImageDataset) -> torch.Tensor:
        """Logits [M, n, K] of `models` on `images`, remembered under `key`."""
        if key not in self._outputs:
            self._outputs[key] = torch.stack([predict_logits(m, images, dataset) for m in models])
        return self._outputs[key]

    def shadow_provider(self, dataset: ImageDataset, forget: Sequence[int], count: int
                        ) -> Callable[[torch.Tensor], ShadowOutputs] | None:
        if self.replay is None:
            return None
        replay = self.replay

        def provide(rows: torch.Tensor) -> ShadowOutputs:
            images, rows_key = dataset.train_images[rows], hash(rows.numpy().tobytes())
            originals = self.models(dataset, "original", count)
            retrained = self.models(dataset, "retrained", count, forget)
            unlearned = [replay(model, replay_seed(i)) for i, model in enumerate(originals)]
            return ShadowOutputs(
                unlearned=torch.stack([predict_logits(m, images, dataset) for m in unlearned]),
                retrained=self.logits(("retrained", count, tuple(sorted(forget)), rows_key), retrained, images,
                                      dataset),
                rows=rows)

        return provide

    def reference_provider(self, dataset: ImageDataset, count: int) -> Callable[[torch.Tensor], ReferenceOutputs]:
        def provide(rows: torch.Tensor) -> ReferenceOutputs:
            references = self.models(dataset, "half", count)
            rows_key = hash(rows.numpy().tobytes())
            return ReferenceOutputs(
                train=self.logits(("half-train", count, rows_key), references, dataset.train_images[rows], dataset),
                test=self.logits(("half-test", count), references, dataset.test_images, dataset),
                train_rows=rows,
                train_in=torch.stack([reference_half(len(dataset.train_labels), i)[rows] for i in range(count)]))

        return provide


def evaluate(
    model: nn.Module | Outputs,
    dataset: ImageDataset,
    forget: Sequence[int],
    *,
    original: nn.Module | Outputs | None = None,
    retrained: Sequence[nn.Module | Outputs] = (),
    options: EvalOptions | None = None,
    method: str | None = None,
    hyperparameters: dict | None = None,
    attack: AttackSetup | None = None,
    device: torch.device | None = None,
) -> tuple[dict, dict[str, str]]:
    """The registered metrics of one model: returns (flat JSON-ready results, {skipped metric: reason}).

    `retrained` starts with the retrained model of the model's own seed (others give the UTV floor); `method`
    and `hyperparameters` say how the model was made (the RWFT target UTV follows its `reassign` rule); `attack`
    lets U-LIRA and RMIA train or reuse their models.
    """
    options = options or EvalOptions()
    names = options.metric_names()
    forget = list(forget)
    rows = train_rows(dataset, options.train_samples, options.seed)
    yardstick_rows = forget_rows(dataset, rows, forget)
    ctx = EvalContext(
        dataset=dataset, forget=forget, rows=rows, options=options,
        target=model_outputs(model, dataset, rows, amp=options.amp),
        original=model_outputs(original, dataset, yardstick_rows, amp=options.amp) if original is not None else None,
        retrained=[model_outputs(r, dataset, yardstick_rows, amp=options.amp) for r in retrained],
        method=method, hyperparameters=dict(hyperparameters or {}),
        device=device or (next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")))
    if attack is not None:
        ctx.shadow_provider = attack.shadow_provider(dataset, forget, options.setting("shadows"))
        ctx.reference_provider = attack.reference_provider(dataset, options.setting("reference_models"))
    results: dict = {"metrics_run": list(names), "train_samples_evaluated": len(rows),
                     "train_samples_total": len(dataset.train_labels), "eval_seed": options.seed}
    skipped: dict[str, str] = {}
    for name in names:
        metric = get_metric(name)
        missing = ctx.missing(metric.needs)
        if missing:
            skipped[name] = _why_missing(missing[0], attack)
            continue
        try:
            results |= metric.compute(ctx)
        except Skip as reason:
            skipped[name] = str(reason)
    return results, skipped


def _why_missing(need: str, attack: AttackSetup | None) -> str:
    if need == "shadows" and attack is not None:
        return "the model records no unlearning method to replay on the shadow models"
    return NEEDS[need]


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

    Arrays: `test_labels`, `forget`, `classes`, `mia_feature`, `mia_nn_class` (-1 if MIA-NN did not run); per model
    (`unlearned`, `original`, `retrained0`, ...): `MODEL_train_rows` (positions in the training split: the
    yardstick models are run on the forget rows only), `MODEL_train_labels`, `MODEL_train_logits` and
    `MODEL_test_logits` [N, K] float32, `MODEL_train_mia`, `MODEL_test_mia` (the MIA's per-sample feature) and,
    where MIA-NN ran, `MODEL_train_mia_nn`, `MODEL_test_mia_nn` (the probability of its nearest class).
    """
    import numpy as np

    from fastforget.io import atomic_path
    from fastforget.metrics.mia import membership_feature

    test_labels = dataset.test_labels.numpy()
    arrays: dict[str, np.ndarray] = {
        "test_labels": test_labels, "forget": np.asarray(list(forget), dtype=np.int64),
        "classes": np.asarray(dataset.classes), "mia_feature": np.asarray(mia_feature),
        "mia_nn_class": np.asarray(-1 if nearest is None else nearest),
    }
    models = {"unlearned": unlearned, "original": original, **{f"retrained{i}": r for i, r in enumerate(retrained)}}
    for name, out in models.items():
        if out is None:
            continue
        train_labels = dataset.train_labels[out.train_rows].numpy()
        arrays[f"{name}_train_rows"] = out.train_rows.numpy()
        arrays[f"{name}_train_labels"] = train_labels
        for split, logits, labels in (("train", out.train, train_labels), ("test", out.test, test_labels)):
            probs = logits.softmax(1).double().numpy()
            arrays[f"{name}_{split}_logits"] = logits.numpy()
            arrays[f"{name}_{split}_mia"] = membership_feature(probs, labels, mia_feature)
            if nearest is not None:
                arrays[f"{name}_{split}_mia_nn"] = probs[:, nearest]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)
