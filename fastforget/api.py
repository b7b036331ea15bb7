"""The Python API behind every command: what `fastforget train|unlearn|eval|bench` do, callable from a notebook."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastforget import metrics
from fastforget.checkpoint import (
    check_data,
    check_model_out,
    file_sha256,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from fastforget.config import Config, check_setting, load_config
from fastforget.data import ImageDataset, data_fingerprint, load_dataset, resolve_classes
from fastforget.data.sources import cache_dir
from fastforget.errors import ConfigError, OutputError
from fastforget.evaluate import AttackSetup, Replay, forget_rows, model_outputs, train_rows, write_plots
from fastforget.evaluate import evaluate as compute_metrics
from fastforget.inference import predict_logits
from fastforget.io import check_output_dir, check_output_file, write_json
from fastforget.metrics.registry import METRICS, EvalOptions
from fastforget.runtime import environment, resolve_device
from fastforget.train import TrainedModel, train_model
from fastforget.unlearn import UnlearnContext, UnlearnResult, run_method


def train(config: str | Path | None = None, *, exclude: Sequence[str | int] = (), seed: int | None = None,
          epochs: int | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
          overwrite: bool = False) -> TrainedModel:
    """Train an original model, or with `exclude` the retrained gold standard; write it to `out` if given (a
    folder that already holds a model only with `overwrite`)."""
    if out is not None:
        check_model_out(out, overwrite=overwrite)
    given = [f"train.{key}={check_setting('train', key, value, f'--{key}')}"
             for key, value in (("epochs", epochs), ("seed", seed)) if value is not None]
    return train_model(load_config(config, [*overrides, *given]), exclude=exclude, out_dir=out)


def config_for_checkpoint(meta: dict, config: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The config a checkpoint was trained with, or the one given, which must be for the same data set."""
    if config is None:
        return load_config(None, overrides, base=meta.get("config"))
    cfg = load_config(config, overrides)
    if cfg.data["name"] != meta["dataset"]:
        raise ConfigError(f"config {config} is for data set {cfg.data['name']!r} but the checkpoint was trained on "
                          f"{meta['dataset']!r}; pass a config for {meta['dataset']!r} or leave --config out")
    return cfg


def unlearn(method: str, checkpoint: str | Path, forget: Sequence[str | int] = (), *,
            config: str | Path | None = None, overrides: Sequence[str] = (),
            hyperparameters: Mapping[str, Any] | None = None, out: str | Path | None = None,
            seed: int | None = None, overwrite: bool = False) -> tuple[UnlearnResult, dict]:
    """Unlearn `forget` from the model at `checkpoint` with `method`; returns the result and the new sidecar.

    `out` (if given) may not be the checkpoint's own folder, nor hold a model unless `overwrite`.
    """
    if out is not None:
        check_model_out(out, overwrite=overwrite, inputs=[checkpoint])
    if seed is not None:
        check_setting("train", "seed", seed, "--seed")
    original, meta = load_checkpoint(checkpoint)
    cfg = config_for_checkpoint(meta, config, overrides)
    device = resolve_device(cfg.train.device)
    dataset = load_dataset(meta["dataset"], cfg.data.get("root") or None)
    check_data(meta, dataset, checkpoint)
    forget_ids = resolve_classes(list(forget) or meta.get("forget", []), dataset.classes)
    if not forget_ids:
        raise ConfigError("name the classes to forget (--forget CLASS ...)")
    seed = meta.get("seed", 0) if seed is None else seed
    ctx = UnlearnContext(original=original, meta=meta, dataset=dataset, forget=forget_ids, cfg=cfg, device=device,
                         seed=seed)
    result = run_method(method, ctx, hyperparameters)
    test = metrics.accuracy(predict_logits(result.model, dataset.test_images, dataset).softmax(1),
                            dataset.test_labels, forget_ids)
    new_meta = {
        **{k: v for k, v in meta.items() if k not in ("wrappers",)},
        "method": method,
        "forget": forget_ids,
        "forget_names": [dataset.classes[i] for i in forget_ids],
        "hyperparameters": result.hyperparameters,
        "wall_seconds": result.wall_seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": result.memory_kind,
        "original_checkpoint": str(checkpoint),
        "original_test_accuracy": meta.get("test_accuracy"),
        "acc_r_test": test.acc_r,
        "acc_f_test": test.acc_f,
        "seed": seed,
        "config": cfg.raw,
        "data_fingerprint": data_fingerprint(dataset),
        "versions": environment(device),
    }
    if out is not None:
        save_checkpoint(out, result.model, new_meta)
    return result, new_meta


def method_replay(method: str, hyperparameters: Mapping[str, Any], cfg: Config, dataset: ImageDataset,
                  forget: Sequence[int], device: torch.device) -> Replay:
    """U-LIRA's replay: unlearn a shadow original with `method` and these hyperparameters. "original" replays
    nothing (the shadow stays as trained) and "retrain" retrains, the two ends a method is placed between."""
    if method == "original":
        return lambda model, seed: model

    def replay(model: nn.Module, seed: int) -> nn.Module:
        meta = {"label_smoothing": cfg.train.label_smoothing, "seed": seed}
        ctx = UnlearnContext(original=model, meta=meta, dataset=dataset, forget=list(forget), cfg=cfg, device=device,
                             seed=seed)
        return run_method(method, ctx, dict(hyperparameters)).model

    return replay


def model_role(meta: dict) -> str:
    """What a checkpoint is: its unlearning method, else "retrain" (trained without classes) or "original"."""
    return meta.get("method") or ("retrain" if meta.get("excluded") else "original")


def _load_related(path: str | Path, meta: dict, role: str, dataset: ImageDataset):
    model, other = load_checkpoint(path)
    if other["dataset"] != meta["dataset"] or other["classes"] != meta["classes"]:
        raise ConfigError(f"the {role} model {path} was trained on {other['dataset']!r}, not on {meta['dataset']!r} "
                          "like the model under evaluation")
    check_data(other, dataset, path)
    return model, other


def _load_retrained(paths: Sequence[str | Path], meta: dict, dataset: ImageDataset, forget: list[int]
                    ) -> list[tuple[Path, nn.Module, dict]]:
    loaded = []
    for path in paths:
        r_model, r_meta = _load_related(path, meta, "retrained", dataset)
        if sorted(r_meta.get("excluded", [])) != sorted(forget):
            raise ConfigError(f"retrained model {path} excluded classes {r_meta.get('excluded_names')} but this "
                              f"evaluation forgets {[dataset.classes[i] for i in forget]}: retrain without "
                              "exactly the forget classes (fastforget train --exclude ...)")
        loaded.append((Path(path), r_model, r_meta))
    return loaded


def _same_seed_first(retrained: list[tuple[Path, nn.Module, dict]], seed: int | None, classes: list[str],
                     forget: list[int]) -> list[tuple[Path, nn.Module, dict]]:
    """The retrained models with the one of the evaluated model's seed first: UTV is measured against it."""
    same = [r for r in retrained if r[2].get("seed") == seed]
    if not same:
        names = " ".join(classes[i] for i in forget)
        raise ConfigError(f"none of the retrained models has the evaluated model's seed {seed} (they have "
                          f"{[r[2].get('seed') for r in retrained]}): UTV compares with the retrained model of the "
                          f"same seed; train it with `fastforget train --exclude {names} --seed {seed}` and give it "
                          "with the others (they then give the UTV floor)")
    return same[:1] + [r for r in retrained if r is not same[0]]


def _distinct_models(paths: Sequence[str | Path], flag: str) -> None:
    """Models given twice (the same file, or identical weights) would make a comparison between them meaningless."""
    seen: dict[str, str | Path] = {}
    for path in paths:
        digest = file_sha256(resolve_checkpoint(path)[0])
        if digest in seen:
            raise ConfigError(f"{flag} {seen[digest]} and {path} are the same model (identical weights): the UTV "
                              "floor compares retrained models of different seeds; train another with "
                              "`fastforget train --exclude ... --seed N`")
        seen[digest] = path


def _subject(checkpoint: str | Path, config: str | Path | None, forget: Sequence[str | int]
             ) -> tuple[nn.Module, dict, Config, ImageDataset, list[int]]:
    """The model to evaluate or audit, its sidecar, config, data set (checked against the sidecar) and forget
    classes: given, else what an unlearned model forgot or a retrained one excluded."""
    model, meta = load_checkpoint(checkpoint)
    cfg = config_for_checkpoint(meta, config)
    dataset = load_dataset(meta["dataset"], cfg.data.get("root") or None)
    check_data(meta, dataset, checkpoint)
    forget_ids = resolve_classes(list(forget) or meta.get("forget") or meta.get("excluded", []), dataset.classes)
    if not forget_ids:
        raise ConfigError(f"{checkpoint} records no forget classes (an original model?): name them with --forget")
    return model, meta, cfg, dataset, forget_ids


def evaluate(checkpoint: str | Path, *, forget: Sequence[str | int] = (), original: str | Path | None = None,
             retrained: Sequence[str | Path] = (), metrics: Sequence[str] | None = None,
             nearest: str | int | None = None,
             json_path: str | Path | None = None, plots_dir: str | Path | None = None,
             options: dict[str, Any] | None = None, config: str | Path | None = None,
             overwrite: bool = False) -> dict:
    """Evaluate one checkpoint; metrics needing a model that was not given are skipped with the reason.

    `options` holds evaluation options and metric settings in one mapping (`seed`, `train_samples`, `amp`,
    `shadows`, `reference_models`, `mia_feature`, ...; see `fastforget.metrics.registry`).
    """
    if json_path:
        check_output_file(json_path, "--json", overwrite=overwrite)
    if plots_dir:
        check_output_dir(plots_dir, "--plots")
    _distinct_models(retrained, "--retrained")
    model, meta, cfg, dataset, forget_ids = _subject(checkpoint, config, forget)
    role = model_role(meta)
    opts = EvalOptions.from_dict({**(options or {}), **({"metrics": tuple(metrics)} if metrics else {})})
    if nearest is not None:
        opts.settings["nearest"] = resolve_classes([nearest], dataset.classes)[0]
        if opts.settings["nearest"] in forget_ids:
            raise ConfigError(f"--nearest {nearest} is a forget class: MIA-NN's nearest class must be a retained "
                              "class (leave --nearest out to take it from the retrained model)")
    if not opts.cache_dir:
        opts.cache_dir = cache_dir()
    loaded = _load_retrained(retrained, meta, dataset, forget_ids)
    if loaded and role != "retrain" and "utv" in opts.metric_names():
        loaded = _same_seed_first(loaded, meta.get("seed"), dataset.classes, forget_ids)
    original_model = _load_related(original, meta, "original", dataset)[0] if original else None
    evaluated = train_rows(dataset, opts.train_samples, opts.seed)
    outputs = model_outputs(model, dataset, evaluated, amp=opts.amp)
    rows = forget_rows(dataset, evaluated, forget_ids)  # all that the yardstick models need
    orig = model_outputs(original_model, dataset, rows, amp=opts.amp) if original_model is not None else None
    retr = [model_outputs(r_model, dataset, rows, amp=opts.amp) for _, r_model, _ in loaded]
    device = resolve_device(cfg.train.device)
    hyperparameters = meta.get("hyperparameters", {})
    attack = AttackSetup(cfg, opts.cache_dir,
                         method_replay(role, hyperparameters, cfg, dataset, forget_ids, device))
    results, skipped = compute_metrics(outputs, dataset, forget_ids, original=orig, retrained=retr, options=opts,
                                       method=role, hyperparameters=hyperparameters, attack=attack, device=device)
    report = {
        "checkpoint": str(checkpoint), "method": role, "dataset": dataset.name,
        "classes": dataset.classes, "forget": forget_ids, "forget_names": [dataset.classes[i] for i in forget_ids],
        **results, "skipped": skipped,
        "original": str(original) if original else None, "retrained": [str(path) for path, _, _ in loaded],
        "retrained_seeds": [r_meta.get("seed") for _, _, r_meta in loaded],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "seed": meta.get("seed"), "config": cfg.raw, "data_fingerprint": data_fingerprint(dataset),
        "versions": environment(),
    }
    if plots_dir:
        report["plots"] = [str(p) for p in write_plots(plots_dir, dataset, forget_ids, outputs, original=orig,
                                                        retrained=retr[0] if retr else None)]
    if json_path:
        write_json(json_path, report)
    return report


def audit(checkpoint: str | Path, *, original: str | Path, out: str | Path, retrained: Sequence[str | Path] = (),
          forget: Sequence[str | int] = (), config: str | Path | None = None, metrics: Sequence[str] | None = None,
          options: dict[str, Any] | None = None, probe: dict[str, int] | None = None, overwrite: bool = False,
          echo: Callable[[str], None] | None = None) -> dict:
    """Audit one checkpoint against retraining: every registered metric (default: all of them, U-LIRA and RMIA
    included) as a test with its threshold, plus the white-box checks; writes `out`/audit.json, audit.md and
    audit.html and returns the report (its "exit_code" is 1 when a test of the forget class leaks).

    Without `retrained`, two retrained references are trained (cached under the evaluation cache folder, like
    U-LIRA's shadows and RMIA's references); `echo` receives the up-front estimate and the progress lines.
    `options`: evaluation options and metric settings as for `evaluate`; `probe`: `shots`, `draws`, `retained`.
    """
    from fastforget.audit import FILES, Model, reference_seeds, run_audit, write_reports

    out = check_output_dir(out)
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not overwrite:
        raise OutputError(f"--out {out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    _distinct_models(retrained, "--retrained")
    digest = file_sha256(resolve_checkpoint(checkpoint)[0])
    if any(file_sha256(resolve_checkpoint(path)[0]) == digest for path in retrained):
        raise ConfigError(f"--checkpoint {checkpoint} is also given as --retrained: the audited model would be its "
                          "own yardstick; give retrained models of other seeds, or leave --retrained out to train them")
    model, meta, cfg, dataset, forget_ids = _subject(checkpoint, config, forget)
    role = model_role(meta)
    opts = EvalOptions.from_dict({**(options or {}), "metrics": tuple(metrics) if metrics else tuple(METRICS)})
    opts.cache_dir = opts.cache_dir or cache_dir()
    if opts.train_samples:
        raise ConfigError("an audit runs on the whole splits: leave train_samples out")
    original_model, original_meta = _load_related(original, meta, "original", dataset)
    loaded = _load_retrained(retrained, meta, dataset, forget_ids)
    if loaded and role != "retrain":
        loaded = _same_seed_first(loaded, meta.get("seed"), dataset.classes, forget_ids)
    device = resolve_device(cfg.train.device)
    hyperparameters = meta.get("hyperparameters", {})
    report = run_audit(
        Model("audited", model, meta, Path(checkpoint)), Model("original", original_model, original_meta,
                                                                Path(original)),
        [Model("retrained", m, r_meta, path) for path, m, r_meta in loaded],
        cfg=cfg, dataset=dataset, forget=forget_ids, method=role, options=opts,
        replay=method_replay(role, hyperparameters, cfg, dataset, forget_ids, device),
        retrained_seeds=reference_seeds(meta.get("seed", 0), role == "retrain"), device=device, probe=probe,
        echo=echo or (lambda line: None))
    report["files"] = [str(path) for path in write_reports(out, report)]
    return report


def bench(config: str | Path, *, out: str | Path, methods: Sequence[str] | None = None,
          forget: Sequence[str] | None = None, seeds: int | None = None, overrides: Sequence[str] = (),
          overwrite: bool = False) -> Path:
    """Run (or resume) the benchmark grid of a config and write its report; returns report.md's path.

    A folder holding results of another config is refused unless `overwrite` (which moves them aside)."""
    from fastforget import bench as grid

    check_output_dir(out)
    return grid.run(grid.plan(config, methods=methods, forget=forget, seeds=seeds, overrides=overrides), out,
                    overwrite=overwrite)
