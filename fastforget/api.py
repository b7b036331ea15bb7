"""The Python API behind every command: what `fastforget train|unlearn|eval|bench` do, callable from a notebook.

`unlearn` and `evaluate` take the user's own objects as well as fastforget's files: any `nn.Module` (what the
methods need of it is `fastforget.models.contract`), a checkpoint, or a plain state_dict file with its
architecture (`arch="torchvision:resnet18"`); data as a name, an ImageDataset, a torch Dataset or (images, labels)
tensors (with `test_data`). They return result objects: `UnlearnResult` (`.model`, `.meta`, ...) and `Report`.
"""

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
    load_state,
    read_state_dict,
    resolve_checkpoint,
    save_checkpoint,
)
from fastforget.config import Config, check_setting, load_config
from fastforget.data import DATASET_NAMES, ImageDataset, data_fingerprint, dataset_options, resolve_classes
from fastforget.data.sources import cache_dir
from fastforget.data.user import DataLike, as_image_dataset
from fastforget.errors import ConfigError, OutputError
from fastforget.evaluate import (
    AttackSetup,
    Replay,
    forget_rows,
    model_outputs,
    save_per_sample,
    train_rows,
    write_plots,
)
from fastforget.evaluate import evaluate as compute_metrics
from fastforget.inference import predict_logits
from fastforget.io import check_output_dir, check_output_file, write_json
from fastforget.metrics.registry import METRICS, EvalOptions
from fastforget.models import build_model
from fastforget.runtime import environment, resolve_device
from fastforget.train import TrainedModel, train_model
from fastforget.unlearn import UnlearnContext, UnlearnResult, run_method

ModelLike = nn.Module | str | Path
"""A model as the API takes it: an nn.Module, a checkpoint (run folder or .safetensors), or a state_dict file."""


def train(config: str | Path | None = None, *, exclude: Sequence[str | int] = (), seed: int | None = None,
          epochs: int | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
          overwrite: bool = False, ddp: bool = False, sync_batchnorm: bool = False) -> TrainedModel:
    """Train an original model, or with `exclude` the retrained gold standard; write it to `out` if given (a
    folder that already holds a model only with `overwrite`).

    `ddp`: data-parallel over the processes torchrun started (`torchrun --standalone --nproc_per_node=N -m
    fastforget train ... --ddp`), the same recipe and global batch; rank 0 writes the model."""
    from fastforget import distributed

    if out is not None:
        check_model_out(out, overwrite=overwrite)
    given = [f"train.{key}={check_setting('train', key, value, f'--{key}')}"
             for key, value in (("epochs", epochs), ("seed", seed)) if value is not None]
    cfg = load_config(config, [*overrides, *given])
    if not ddp:
        return train_model(cfg, exclude=exclude, out_dir=out, sync_batchnorm=sync_batchnorm)
    distributed.init(resolve_device(cfg.train.device))
    try:
        return train_model(cfg, exclude=exclude, out_dir=out if distributed.is_main() else None,
                           sync_batchnorm=sync_batchnorm)
    finally:
        distributed.close()


class Report(dict):
    """What `evaluate` returns: the JSON report as a dict whose keys also read as attributes (`report.mia`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"the report has no {key!r}; it holds {', '.join(self)}") from None


def config_for_checkpoint(meta: dict, config: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The config a checkpoint was trained with, or the one given, which must be for the same data set."""
    if config is None:
        return load_config(None, overrides, base=meta.get("config"))
    cfg = load_config(config, overrides)
    if cfg.data["name"] != meta["dataset"]:
        raise ConfigError(f"config {config} is for data set {cfg.data['name']!r} but the checkpoint was trained on "
                          f"{meta['dataset']!r}; pass a config for {meta['dataset']!r} or leave --config out")
    return cfg


def prepare(model: ModelLike, data: DataLike | None = None, *, test_data: Any = None,
            classes: Sequence[str] | None = None, arch: str | None = None, arch_args: Mapping[str, int] | None = None,
            config: str | Path | None = None, overrides: Sequence[str] = (), data_dir: str | Path | None = None,
            ) -> tuple[nn.Module, dict, ImageDataset, Config]:
    """A model, its sidecar, its data and its config, from whatever the user has.

    `model`: an `nn.Module`, a fastforget checkpoint (run folder or .safetensors with its sidecar), or with `arch`
    a plain state_dict file (.pt read with weights_only=True, or .safetensors) of that architecture. `data`: a data
    set name, an ImageDataset, a torch Dataset or (images, labels) tensors (then also `test_data`); by default the
    data set the checkpoint's sidecar names.
    """
    source = _shown_model(model)
    sidecar = None
    if isinstance(model, str | Path) and arch is None:
        model, sidecar = load_checkpoint(model)
    if sidecar is not None:
        cfg = config_for_checkpoint(sidecar, config, overrides)
    else:
        named = isinstance(data, str) and data.lower() in DATASET_NAMES
        cfg = load_config(config, [*([f"data.name={data.lower()}"] if named and config is None else []),
                                   *overrides])
    if data is None and sidecar is None:
        raise ConfigError(f"{source} comes without a fastforget sidecar, so name its data: data=NAME or a Dataset "
                          "(--data NAME on the command line)")
    dataset = as_image_dataset(sidecar["dataset"] if data is None else data, test_data, classes=classes,
                               root=data_dir or cfg.data.get("root") or None, **dataset_options(cfg))
    if sidecar is not None:
        check_data(sidecar, dataset, source)
        return model.eval(), sidecar, dataset, cfg
    if isinstance(model, str | Path):
        arch_args = {**(arch_args or {}), "in_channels": dataset.in_channels}
        try:
            built = build_model(arch, dataset.num_classes, **arch_args)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"--arch {arch}: {err}") from None
        model = load_state(built, read_state_dict(model), source)
    meta = {"arch": arch or f"module:{type(model).__name__}", "arch_args": dict(arch_args or {}),
            "dataset": dataset.name, "classes": list(dataset.classes), "excluded": [], "forget": [], "seed": 0,
            "source": source}
    return model.eval(), meta, dataset, cfg


def unlearn(method: str, model: ModelLike, forget: Sequence[str | int] = (), *, data: DataLike | None = None,
            test_data: Any = None, classes: Sequence[str] | None = None, arch: str | None = None,
            forget_indices: Sequence[int] | torch.Tensor | None = None,
            config: str | Path | None = None, overrides: Sequence[str] = (),
            hyperparameters: Mapping[str, Any] | None = None, out: str | Path | None = None,
            seed: int | None = None, overwrite: bool = False, **hp: Any) -> UnlearnResult:
    """Unlearn `forget` (class names or indices) from `model` with `method`; returns the result, whose `model` is
    the unlearned module and `meta` its sidecar (also written to `out`, if given).

    `model` and `data` are what `prepare` takes: an nn.Module or a checkpoint, and data (default: the checkpoint's);
    hyperparameters come as `hyperparameters={...}` or keywords (`epochs=5`). `out` may not be the checkpoint's
    own folder, nor hold a model unless `overwrite`.

    `forget_indices` (training-sample indices or a boolean mask over the training split) forgets those samples
    instead of whole classes, with the methods that support it (ga, ft, l1, bu, bu-expand, ssd, svd, retrain; the
    RWFT family is class-level by construction). The result then records the test accuracy and the accuracy on the
    forgotten samples; `evaluate`'s metrics are class-level.
    """
    if out is not None:
        check_model_out(out, overwrite=overwrite, inputs=[model] if isinstance(model, str | Path) else [])
    if seed is not None:
        check_setting("train", "seed", seed, "--seed")
    original, meta, dataset, cfg = prepare(model, data, test_data=test_data, classes=classes, arch=arch,
                                           config=config, overrides=overrides)
    device = resolve_device(cfg.train.device)
    if forget_indices is not None and forget:
        raise ConfigError("give forget (classes) or forget_indices (training samples), not both")
    forget_ids = [] if forget_indices is not None else \
        resolve_classes(list(forget) or meta.get("forget", []), dataset.classes)
    if not forget_ids and forget_indices is None:
        raise ConfigError("name the classes to forget (--forget CLASS ...)")
    seed = meta.get("seed", 0) if seed is None else seed
    ctx = UnlearnContext(original=original, meta=meta, dataset=dataset, forget=forget_ids, cfg=cfg, device=device,
                         seed=seed, forget_samples=forget_indices)
    result = run_method(method, ctx, {**(hyperparameters or {}), **hp})
    test_logits = predict_logits(result.model, dataset.test_images, dataset)
    if ctx.forget_samples is None:
        test = metrics.accuracy(test_logits.softmax(1), dataset.test_labels, forget_ids)
        accuracies = {"acc_r_test": test.acc_r, "acc_f_test": test.acc_f}
    else:
        forgotten = ctx.forget_samples
        accuracies = {
            "forget_samples": forgotten.tolist(),
            "acc_test": 100.0 * (test_logits.argmax(1) == dataset.test_labels).double().mean().item(),
            "acc_forget_samples": 100.0 * (predict_logits(result.model, dataset.train_images[forgotten], dataset)
                                           .argmax(1) == dataset.train_labels[forgotten]).double().mean().item()}
    result.meta = {
        **{k: v for k, v in meta.items() if k not in ("wrappers",)},
        "method": method,
        "forget": forget_ids,
        "forget_names": [dataset.classes[i] for i in forget_ids],
        "hyperparameters": result.hyperparameters,
        "wall_seconds": result.wall_seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": result.memory_kind,
        "original_checkpoint": _shown_model(model),
        "original_test_accuracy": meta.get("test_accuracy"),
        **accuracies,
        "seed": seed,
        "config": cfg.raw,
        "data_fingerprint": data_fingerprint(dataset),
        "versions": environment(device),
    }
    if out is not None:
        save_checkpoint(out, result.model, result.meta)
    return result


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


def _related(model: ModelLike, meta: dict, role: str, dataset: ImageDataset, arch: str | None
             ) -> tuple[nn.Module, dict]:
    """The original or a retrained model of an evaluation (same data, same classes), and its sidecar."""
    if isinstance(model, nn.Module) or arch is not None:
        return prepare(model, dataset, arch=arch)[:2]
    related, other = load_checkpoint(model)
    if other["dataset"] != meta["dataset"] or other["classes"] != meta["classes"]:
        raise ConfigError(f"the {role} model {model} was trained on {other['dataset']!r}, not on "
                          f"{meta['dataset']!r} like the model under evaluation")
    check_data(other, dataset, model)
    return related, other


def _distinct_models(models: Sequence[ModelLike], flag: str) -> None:
    """Models given twice (the same file, or identical weights) would make a comparison between them meaningless."""
    seen: dict[str, Any] = {}
    for model in models:
        if isinstance(model, nn.Module):
            digest = f"object {id(model)}"
        else:
            path = Path(model)
            digest = file_sha256(path if path.is_file() else resolve_checkpoint(path)[0])
        if digest in seen:
            raise ConfigError(f"{flag} {seen[digest]} and {model} are the same model (identical weights): the UTV "
                              "floor compares retrained models of different seeds; train another with "
                              "`fastforget train --exclude ... --seed N`")
        seen[digest] = model if not isinstance(model, nn.Module) else type(model).__name__


def evaluate(model: ModelLike, data: DataLike | None = None, forget: Sequence[str | int] = (), *,
             original: ModelLike | None = None, retrained: Sequence[ModelLike] = (),
             test_data: Any = None, classes: Sequence[str] | None = None, arch: str | None = None,
             metrics: Sequence[str] | None = None, nearest: str | int | None = None,
             json_path: str | Path | None = None, plots_dir: str | Path | None = None,
             samples_path: str | Path | None = None,
             options: dict[str, Any] | None = None, config: str | Path | None = None,
             overrides: Sequence[str] = (), data_dir: str | Path | None = None,
             overwrite: bool = False) -> Report:
    """Evaluate one model (an nn.Module or a checkpoint: see `prepare`) on `data`; metrics needing a model that was
    not given are skipped with the reason. `arch` applies to every model given as a plain state_dict file.
    Returns the report (a dict, keys also attributes), written as JSON to `json_path` if given; `samples_path`
    (.npz) keeps every model's logits and attack features per sample (`evaluate.save_per_sample`).

    `options` holds evaluation options and metric settings in one mapping (`seed`, `train_samples`, `amp`,
    `shadows`, `reference_models`, `mia_feature`, ...; see `fastforget.metrics.registry`).
    """
    if json_path:
        check_output_file(json_path, "--json", overwrite=overwrite)
    if samples_path:
        check_output_file(samples_path, "--samples", overwrite=overwrite)
    if plots_dir:
        check_output_dir(plots_dir, "--plots")
    _distinct_models(retrained, "--retrained")
    shown = _shown_model(model)
    model, meta, dataset, cfg = prepare(model, data, test_data=test_data, classes=classes, arch=arch,
                                        config=config, overrides=overrides, data_dir=data_dir)
    role = model_role(meta)
    # An unlearned model records what it forgot, a retrained one what it never saw; an original needs --forget.
    forget_ids = resolve_classes(list(forget) or meta.get("forget") or meta.get("excluded", []), dataset.classes)
    if not forget_ids:
        raise ConfigError(f"{shown} records no forget classes (an original model?): name them with --forget")
    opts = EvalOptions.from_dict({**(options or {}), **({"metrics": tuple(metrics)} if metrics else {})})
    if nearest is not None:
        opts.settings["nearest"] = resolve_classes([nearest], dataset.classes)[0]
        if opts.settings["nearest"] in forget_ids:
            raise ConfigError(f"--nearest {nearest} is a forget class: MIA-NN's nearest class must be a retained "
                              "class (leave --nearest out to take it from the retrained model)")
    if not opts.cache_dir:
        opts.cache_dir = cache_dir()
    loaded = []
    for given in retrained:
        r_model, r_meta = _related(given, meta, "retrained", dataset, arch)
        if "source" not in r_meta and sorted(r_meta.get("excluded", [])) != sorted(forget_ids):  # fastforget's
            raise ConfigError(f"retrained model {given} excluded classes {r_meta.get('excluded_names')} but this "
                              f"evaluation forgets {[dataset.classes[i] for i in forget_ids]}: retrain without "
                              "exactly the forget classes (fastforget train --exclude ...)")
        loaded.append((given, r_model, r_meta))
    if loaded and role != "retrain" and "utv" in opts.metric_names():
        loaded = _same_seed_first(loaded, meta.get("seed"), dataset.classes, forget_ids)
    original_model = _related(original, meta, "original", dataset, arch)[0] if original is not None else None
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
    report = Report({
        "checkpoint": shown, "method": role, "dataset": dataset.name,
        "classes": dataset.classes, "forget": forget_ids, "forget_names": [dataset.classes[i] for i in forget_ids],
        **results, "skipped": skipped,
        "original": _shown_model(original), "retrained": [_shown_model(given) for given, _, _ in loaded],
        "retrained_seeds": [r_meta.get("seed") for _, _, r_meta in loaded],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "seed": meta.get("seed"), "config": cfg.raw, "data_fingerprint": data_fingerprint(dataset),
        "versions": environment(),
    })
    if plots_dir:
        report["plots"] = [str(p) for p in write_plots(plots_dir, dataset, forget_ids, outputs, original=orig,
                                                        retrained=retr[0] if retr else None, method=role)]
    if samples_path:
        report["samples"] = str(save_per_sample(samples_path, dataset, forget_ids, outputs, original=orig,
                                                retrained=retr, mia_feature=opts.setting("mia_feature"),
                                                nearest=results.get("mia_nn_class")))
    if json_path:
        write_json(json_path, dict(report))
    return report


def _shown_model(model: ModelLike | None) -> str | None:
    if model is None:
        return None
    return type(model).__name__ if isinstance(model, nn.Module) else str(model)


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
    model, meta, dataset, cfg = prepare(checkpoint, config=config)
    role = model_role(meta)
    forget_ids = resolve_classes(list(forget) or meta.get("forget") or meta.get("excluded", []), dataset.classes)
    if not forget_ids:
        raise ConfigError(f"{checkpoint} records no forget classes (an original model?): name them with --forget")
    opts = EvalOptions.from_dict({**(options or {}), "metrics": tuple(metrics) if metrics else tuple(METRICS)})
    opts.cache_dir = opts.cache_dir or cache_dir()
    if opts.train_samples:
        raise ConfigError("an audit runs on the whole splits: leave train_samples out")
    original_model, original_meta = _related(original, meta, "original", dataset, None)
    loaded = []
    for given in retrained:
        r_model, r_meta = _related(given, meta, "retrained", dataset, None)
        if sorted(r_meta.get("excluded", [])) != sorted(forget_ids):
            raise ConfigError(f"retrained model {given} excluded classes {r_meta.get('excluded_names')} but this "
                              f"audit forgets {[dataset.classes[i] for i in forget_ids]}: retrain without exactly "
                              "the forget classes (fastforget train --exclude ...)")
        loaded.append((Path(given), r_model, r_meta))
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
          overwrite: bool = False, engine: str = "local", address: str | None = None,
          gpus_per_cell: float | None = None, max_retries: int | None = None, only: str | None = None) -> Path | None:
    """Run (or resume) the benchmark grid of a config and write its report; returns report.md's path.

    `engine` "ray" runs the tasks on a Ray cluster (`address`: None starts one on this machine, "auto" or
    HOST:PORT joins one), `gpus_per_cell` GPUs per cell task (fractions pack several cells on one GPU),
    `max_retries` per task whose worker or node dies. A task that fails is listed in out/failures.jsonl and the
    rest of the grid finishes; then `GridIncompleteError` is raised. `only` runs one task (see `bench_commands`).
    A folder holding results of another config is refused unless `overwrite` (which moves them aside)."""
    from fastforget import bench as grid
    from fastforget.engines import DEFAULT_GPUS_PER_CELL, DEFAULT_MAX_RETRIES, make_engine

    check_output_dir(out)
    chosen = make_engine(engine, address=address, max_retries=DEFAULT_MAX_RETRIES if max_retries is None else
                         max_retries, gpus_per_cell=DEFAULT_GPUS_PER_CELL if gpus_per_cell is None else gpus_per_cell)
    if only is not None and engine != "local":
        raise ConfigError("--only runs one task in this process: leave --engine out")
    return grid.run(grid.plan(config, methods=methods, forget=forget, seeds=seeds, overrides=overrides), out,
                    overwrite=overwrite, engine=chosen, only=only)


def bench_commands(config: str | Path, *, out: str | Path, methods: Sequence[str] | None = None,
                   forget: Sequence[str] | None = None, seeds: int | None = None,
                   overrides: Sequence[str] = ()) -> list[str]:
    """The grid as one shell command per task (models, then cells, then the report), for Slurm arrays or any
    scheduler: each runs one task with `--only`, resumes, and appends to the same results.jsonl under its lock."""
    from fastforget import bench as grid

    check_output_dir(out)
    out = Path(out).resolve()  # a scheduler's job may start in another folder
    config = Path(config).resolve() if Path(config).is_file() else config
    base = ["fastforget", "bench", "--config", str(config)]
    if methods:
        base += ["--methods", ",".join(methods)]
    for item in forget or []:
        base += ["--forget", str(item)]
    if seeds is not None:
        base += ["--seeds", str(seeds)]
    for text in overrides:
        base += ["--set", text]
    return grid.commands(grid.plan(config, methods=methods, forget=forget, seeds=seeds, overrides=overrides), out,
                         base)
