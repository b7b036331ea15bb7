"""The benchmark grid behind `fastforget bench`: which method, how well, how fast, for one setting.

For each seed it trains (or reuses) the original; for each forget set, the retrained gold standard (plus extra
retrained seeds for the UTV floor); then runs every method and every metric, appending one JSON line per finished
cell to `results.jsonl`. A killed run is resumed by running the same command: finished cells are skipped and
models are reused after their sidecars are checked. Tables, figures and `report.md` are computed from the JSON
lines alone (`write_report`), so they can be rebuilt at any time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shlex
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fastforget.api import method_replay
from fastforget.checkpoint import SIDECAR, check_data, load_checkpoint, save_checkpoint
from fastforget.config import Config, Rule, check_value, did_you_mean, load_config
from fastforget.data import ImageDataset, config_dataset, data_fingerprint, dataset_options, resolve_classes
from fastforget.data.sources import cache_dir
from fastforget.engines import Engine, Failure, Task, execution_record
from fastforget.engines.local import LocalEngine
from fastforget.errors import CheckpointError, ConfigError, DataMismatchError, GridIncompleteError
from fastforget.evaluate import AttackSetup, evaluate, model_outputs, save_per_sample, train_rows
from fastforget.io import append_jsonl, atomic_write, check_output_dir, exclusive_lock, safe_name, write_json
from fastforget.metrics.intervals import combine_cells
from fastforget.metrics.registry import (
    METRICS,
    SETTINGS,
    TABLE_TITLES,
    Column,
    EvalOptions,
    default_metrics,
    uninformative_mark,
)
from fastforget.runtime import environment, progress_enabled, resolve_device
from fastforget.shadows import ShadowSpec, recipe_key, shadow_specs, train_shadow
from fastforget.train import train_model
from fastforget.unlearn import UnlearnContext, run_method

BENCH_DEFAULTS = {
    "methods": ["original", "retrain", "rwft-o", "rwft-2-o", "rw-a", "rw-mask", "ft", "rl", "ga", "l1", "bu",
                "salun", "svd", "ssd"],
    "forget": "all",          # "all" (one cell per class), a list of classes, or a list of lists (multi-class)
    "seeds": 1,
    "metrics": list(default_metrics()),  # add "ulira", "rmia" for the attacks that train models of their own
    "retrained_seeds": 2,     # retrained models per forget set; two or more give the UTV floor
    "shadows": SETTINGS["shadows"],                    # U-LIRA shadow pairs
    "reference_models": SETTINGS["reference_models"],  # RMIA reference models
    "eval_seed": 0,           # one evaluation seed for every cell: same subsamples, same resamples
    "train_samples": 0,       # train-split metrics on the whole split (0) or a stratified subsample
    "reassignment_class": "", # the forget class whose reassignment is plotted (default: the first)
    "reassignment_method": "rwft-2-o",
    "variants": {},           # name -> {"method": base method, hyperparameter: value, ...}, usable in `methods`
}
BENCH_RULES = {"seeds": Rule(min=1), "retrained_seeds": Rule(min=1), "shadows": Rule(min=0),
               "reference_models": Rule(min=0)}  # the other settings are checked for the type of their default
CELL_SETTINGS = ("methods", "forget", "seeds", "reassignment_class", "reassignment_method")  # which cells exist
REFERENCE_ROWS = ("original", "retrain")  # not unlearning methods: the two ends every method is placed between
FLOOR_SEED_OFFSET = 1000


@dataclass
class BenchPlan:
    cfg: Config
    dataset: ImageDataset
    methods: list[str]
    forget_sets: list[list[int]]
    seeds: list[int]
    settings: dict


def plan(config: str | Path, *, methods: Sequence[str] | None = None, forget: Sequence[str] | None = None,
         seeds: int | None = None, overrides: Sequence[str] = ()) -> BenchPlan:
    """Resolve the grid: config `[bench]` table <- command-line arguments."""
    from fastforget.unlearn import METHODS
    from fastforget.unlearn.registry import merge_hyperparameters

    cfg = load_config(config, overrides)
    settings = {**BENCH_DEFAULTS, **cfg.raw.get("bench", {})}
    unknown = sorted(set(settings) - set(BENCH_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown [bench] setting {unknown[0]!r} (from {cfg.source})"
                          f"{did_you_mean(unknown[0], BENCH_DEFAULTS)}; known: {', '.join(BENCH_DEFAULTS)}")
    if methods:
        settings["methods"] = list(methods)
    if seeds is not None:
        settings["seeds"] = check_value("--seeds", seeds, 1, BENCH_RULES["seeds"])
    for key, default in BENCH_DEFAULTS.items():
        if key != "forget":
            settings[key] = check_value(f"bench.{key}", settings[key], default, BENCH_RULES.get(key), cfg.source)
    if settings["forget"] != "all" and not isinstance(settings["forget"], list):
        raise ConfigError(f"bench.forget must be \"all\" or a list of classes (like [\"3\"], or [[\"3\", \"8\"]] for "
                          f"a multi-class cell), not {settings['forget']!r} (from {cfg.source})")
    for metric in settings["metrics"]:
        if metric not in METRICS:
            raise ConfigError(f"bench.metrics holds {metric!r} (from {cfg.source}), not a metric"
                              f"{did_you_mean(str(metric), METRICS)}; metrics: {', '.join(METRICS)}")
    for metric in settings["metrics"]:
        if METRICS[metric].check is not None:  # before any model is trained; every cell has a retrained model
            METRICS[metric].check(settings, True)
    for name, variant in settings["variants"].items():
        if not isinstance(variant, dict) or variant.get("method") not in METHODS:
            raise ConfigError(f"[bench.variants.{name!r}] needs method = one of {sorted(METHODS)}")
        merge_hyperparameters(METHODS[variant["method"]], cfg.method_overrides(variant["method"]),
                              {k: v for k, v in variant.items() if k != "method"}, origin=f"[bench.variants.{name!r}]")
    bad = [m for m in settings["methods"] if m not in METHODS and m not in REFERENCE_ROWS
           and m not in settings["variants"]]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; `fastforget unlearn --list` shows them")
    dataset = config_dataset(cfg)
    spec = list(forget) if forget else settings["forget"]
    if spec == "all":
        forget_sets = [[c] for c in range(dataset.num_classes)]
    else:
        forget_sets = [resolve_classes(item if isinstance(item, list) else [item], dataset.classes) for item in spec]
    first_seed = cfg.train.seed
    return BenchPlan(cfg=cfg, dataset=dataset, methods=list(settings["methods"]), forget_sets=forget_sets,
                     seeds=[first_seed + i for i in range(settings["seeds"])], settings=settings)


def read_results(path: str | Path) -> list[dict]:
    """The finished cells, each once (the first line of a cell key wins); a line cut off by a kill is ignored (it
    is redone)."""
    path = Path(path)
    if not path.is_file():
        return []
    records: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "cell" in record:
            records.setdefault(record["cell"], record)
    return list(records.values())


def drop_partial_line(path: Path) -> None:
    """Cut a last line that a kill left half-written, so that the next append starts on a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _tag(forget: Sequence[int]) -> str:
    return "-".join(map(str, forget))


def _cell_key(method: str, forget: Sequence[int], seed: int) -> str:
    """A cell's key in results.jsonl: what a resumed run skips."""
    return f"{method}|{_tag(forget)}|s{seed}"


def config_hash(config: dict, settings: dict, fingerprint: dict | None) -> str:
    """A short hash of everything that decides a cell's numbers (config, bench settings, data), but not of which
    cells there are: a grid extended with methods, forget classes or seeds keeps its hash."""
    decisive = {"config": {k: v for k, v in config.items() if k != "bench"},
                "bench": {k: v for k, v in settings.items() if k not in CELL_SETTINGS}, "data": fingerprint}
    decisive["config"]["data"] = {k: v for k, v in decisive["config"].get("data", {}).items() if k != "root"}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _claim(out: Path, bench: BenchPlan, digest: str, fingerprint: dict, overwrite: bool) -> None:
    """Before anything is written: the folder holds nothing of another config (or, with `overwrite`, that is moved
    to out/superseded-HASH/), and every model it holds fits this config. A folder written before hashes were
    recorded is judged by its config.json (its data assumed unchanged: it recorded no fingerprint)."""
    recorded = _read_json(out / "config.json")
    hashes = {r.get("config_hash") for r in read_results(out / "results.jsonl")} - {None}
    if recorded:
        hashes.add(recorded.get("config_hash") or config_hash(
            recorded.get("config", {}), recorded.get("bench", {}), recorded.get("data_fingerprint", fingerprint)))
    models = sorted(p.parent for p in (out / "models").glob(f"*/{SIDECAR}"))
    misfits = [m for m in models if _read_json(m / SIDECAR).get("recipe_key") != recipe_key(bench.cfg)]
    old = sorted(hashes - {digest})
    if not old and not misfits:
        return
    aside = out / f"superseded-{old[0] if old else 'models'}"
    if not overwrite:
        what = f"results of config {', '.join(old)} (this run: {digest})" if old else f"models {misfits[0]}"
        raise ConfigError(f"{out} holds {what}{_changes(recorded, bench)}: this output folder belongs to another "
                          f"config; use a fresh --out, or --overwrite to move the old results to {aside}/")
    aside = next(a for a in (aside, *(aside.with_name(f"{aside.name}-{n}") for n in range(2, 10**6)))
                 if not a.exists())
    (aside / "models").mkdir(parents=True)
    for path in out.iterdir():
        if path.is_file() and not path.name.endswith(".lock"):
            path.rename(aside / path.name)
    for model in misfits:
        model.rename(aside / "models" / model.name)


def _changes(recorded: dict, bench: BenchPlan) -> str:
    """`; changed: train.lr 0.05 -> 0.01, ...` between a folder's recorded config and this run's."""
    if not recorded:
        return ""
    before = _flat({"config": recorded.get("config", {}), "bench": recorded.get("bench", {})})
    now = _flat({"config": bench.cfg.raw, "bench": bench.settings})
    ignored = ("config.bench.", *(f"bench.{key}" for key in CELL_SETTINGS))
    changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
               if before.get(k) != now.get(k) and not k.startswith(ignored)]
    return f"; changed: {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}" if changed else ""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the plan as a graph of tasks

@dataclass(frozen=True)
class GridContext:
    """What every task of a grid needs, and nothing heavy (no tensors): it travels to Ray workers as is."""

    cfg: Config
    settings: dict
    out: Path
    fingerprint: dict
    cache_dir: Path

    def options(self) -> EvalOptions:
        """One evaluation seed and one set of train rows for every cell (bench.eval_seed, bench.train_samples)."""
        s = self.settings
        return EvalOptions(metrics=tuple(s["metrics"]), seed=s["eval_seed"], train_samples=s["train_samples"],
                           cache_dir=self.cache_dir,
                           settings={"shadows": s["shadows"], "reference_models": s["reference_models"]})


_DATASETS: dict[tuple, ImageDataset] = {}  # per process: a worker loads the data set once for all its tasks
_LOADED: OrderedDict[tuple, tuple] = OrderedDict()  # per process: (folder, weights) -> (model, meta, outputs)
LOADED_MODELS = 8
_ATTACKS: dict[tuple, AttackSetup] = {}  # per process: shadow and reference models, loaded once


def _attack(ctx: GridContext) -> AttackSetup:
    """This process's U-LIRA / RMIA models (loaded once, shared by its cells; trained by tasks of their own)."""
    key = (recipe_key(ctx.cfg), str(ctx.cache_dir))
    if key not in _ATTACKS:
        _ATTACKS.clear()
        _ATTACKS[key] = AttackSetup(ctx.cfg, ctx.cache_dir, train_missing=False)
    return _ATTACKS[key]


def _data_key(cfg: Config) -> tuple:
    return cfg.data["name"], cfg.data.get("root") or None, tuple(sorted(dataset_options(cfg).items()))


def grid_dataset(ctx: GridContext) -> ImageDataset:
    """The grid's data set in this process, checked against the driver's fingerprint (a node of a cluster that
    sees other data would compute other numbers)."""
    key = _data_key(ctx.cfg)
    if key not in _DATASETS:
        dataset = config_dataset(ctx.cfg)
        if data_fingerprint(dataset) != ctx.fingerprint:
            raise DataMismatchError(f"the {key[0]} data on {socket.gethostname()} differ from the data the grid was "
                                    "planned with: every node must read the same files (FASTFORGET_DATA)")
        _DATASETS.clear()
        _DATASETS[key] = dataset
    return _DATASETS[key]


def _check_fits(folder: Path, meta: dict, ctx: GridContext, seed: int, exclude: Sequence[int]) -> None:
    expected = {"seed": seed, "excluded": sorted(exclude), "recipe_key": recipe_key(ctx.cfg)}
    found = {k: meta.get(k) for k in expected}
    if found != expected:
        raise ConfigError(f"{folder} holds a model trained with {found}, not {expected}: this output folder "
                          "belongs to another config; use a fresh --out, or --overwrite to move it aside")


def train_grid_model(ctx: GridContext, folder: str, seed: int, exclude: tuple[int, ...], desc: str) -> str:
    """A training task: the model in `folder`, trained unless a fitting one is there already; returns the folder."""
    path = Path(folder)
    if (path / SIDECAR).is_file():
        _check_fits(path, _read_json(path / SIDECAR), ctx, seed, exclude)
        return folder
    trained = train_model(ctx.cfg, exclude=sorted(exclude), seed=seed, dataset=grid_dataset(ctx), desc=desc)
    trained.meta["recipe_key"] = recipe_key(ctx.cfg)
    save_checkpoint(path, trained.model, trained.meta)
    return folder


def train_grid_shadow(ctx: GridContext, spec: ShadowSpec) -> str:
    """A training task for a U-LIRA shadow or an RMIA reference model (cached under the cache folder)."""
    if not spec.fits():
        train_shadow(spec, ctx.cfg, grid_dataset(ctx))
    return str(spec.folder)


def _load_model(ctx: GridContext, folder: str, seed: int, exclude: Sequence[int], rows) -> tuple:
    """A trained model with its outputs on the evaluated rows, loaded once per process (cells never train)."""
    path = Path(folder)
    if not (path / SIDECAR).is_file():
        raise CheckpointError(f"{path} holds no model: its training task has not run or failed; rerun the "
                              "benchmark to train it")
    key = (str(path), _read_json(path / SIDECAR).get("weights_sha256"), len(rows))
    if key not in _LOADED:
        model, meta = load_checkpoint(path)
        _check_fits(path, meta, ctx, seed, exclude)
        dataset = grid_dataset(ctx)
        check_data(meta, dataset, path)
        _LOADED[key] = (model, meta, model_outputs(model, dataset, rows))
        while len(_LOADED) > LOADED_MODELS:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def run_grid_cell(ctx: GridContext, method: str, forget: list[int], seed: int, original: str,
                  *models: str) -> dict:
    """A cell task: one method on one forget set and seed, evaluated; `original` and then the retrained models
    (and any shadow models, found by name) are the folders its training tasks wrote."""
    dataset = grid_dataset(ctx)
    options = ctx.options()
    rows = train_rows(dataset, options.train_samples, options.seed)
    original_model, original_meta, original_out = _load_model(ctx, original, seed, [], rows)
    retrained = [_load_model(ctx, folder, seed + k * FLOOR_SEED_OFFSET, forget, rows)
                 for k, folder in enumerate(models[:_retrained_count(ctx.settings)])]
    gold_model, gold_meta, _ = retrained[0]
    retrained_outs = [outputs for _, _, outputs in retrained]
    device = resolve_device(ctx.cfg.train.device)
    record = {"cell": _cell_key(method, forget, seed), "method": method, "forget": forget,
              "forget_names": [dataset.classes[i] for i in forget], "seed": seed}
    memory_kind = ""
    base = ctx.settings["variants"].get(method, {}).get("method", method)
    if method == "original":
        model, hp, wall, memory = original_model, {}, 0.0, None
    elif method == "retrain":  # the gold standard itself: retraining with the original's recipe and seed
        model, hp, wall, memory = gold_model, {}, gold_meta["train_seconds"], None
    else:
        unlearn_ctx = UnlearnContext(original=original_model, meta=original_meta, dataset=dataset, forget=forget,
                                     cfg=ctx.cfg, device=device, seed=seed)
        variant = dict(ctx.settings["variants"].get(method, {"method": method}))
        result = run_method(variant.pop("method"), unlearn_ctx, variant)
        model, hp, wall, memory = result.model, result.hyperparameters, result.wall_seconds, result.peak_memory_bytes
        memory_kind = result.memory_kind
    cached = {"original": original_out, "retrain": retrained_outs[0]}
    outputs = cached[method] if method in cached else model_outputs(model, dataset, rows)
    # The retrain row is compared with the *other* retrained seeds: against itself its UTV would be 0 by definition.
    references = retrained_outs[1:] if method == "retrain" else retrained_outs
    replay = method_replay(base, hp, ctx.cfg, dataset, forget, device)
    metrics, skipped = evaluate(outputs, dataset, forget, original=original_out, retrained=references,
                                options=options, method=base, hyperparameters=hp,
                                attack=_attack(ctx).for_method(replay), device=device)
    # per-sample outputs, for re-analysis without rerunning
    save_per_sample(ctx.out / "samples" / f"{safe_name(record['cell'])}.npz", dataset, forget, outputs,
                    original=original_out, retrained=references, mia_feature=options.setting("mia_feature"),
                    nearest=metrics.get("mia_nn_class"))
    if method == "retrain" and not references:
        skipped["utv"] = "the retrain row needs retrained_seeds >= 2 (a second retrained model to compare with)"
    return {**record, "wall_seconds": wall, "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
            "hyperparameters": hp, **metrics, "skipped": skipped, "versions": environment(device)}


def _retrained_count(settings: dict) -> int:
    return max(1, settings["retrained_seeds"])


def build_graph(bench: BenchPlan, ctx: GridContext, cells: Sequence[tuple[int, list[int], str]]) -> list[Task]:
    """Training tasks (originals, retrained models, shadow pairs, reference models) for `cells`, each once, then
    the cells, each needing exactly the models it loads. Model folders keep their deterministic names."""
    models = ctx.out / "models"
    s = bench.settings
    tasks: dict[str, Task] = {}

    def training(key: str, fn, args: tuple, product: str) -> str:
        if key not in tasks:
            tasks[key] = Task(key=f"train:{key}", fn=fn, args=(ctx, *args), product=product)
        return tasks[key].key

    def grid_model(name: str, seed: int, exclude: Sequence[int], desc: str) -> str:
        folder = str(models / name)
        return training(name, train_grid_model, (folder, seed, tuple(exclude), desc), folder)

    def shadows(kind: str, count: int, forget: Sequence[int] = ()) -> list[str]:
        specs = shadow_specs(bench.cfg, bench.dataset, kind=kind, count=count, cache_dir=ctx.cache_dir, forget=forget)
        return [training(f"shadow-{spec.folder.name}", train_grid_shadow, (spec,), str(spec.folder))
                for spec in specs]

    cell_tasks = []
    for seed, forget, method in cells:
        needs = [grid_model(f"original-s{seed}", seed, [], "original")]
        needs += [grid_model(f"retrained-{_tag(forget)}-s{seed + k * FLOOR_SEED_OFFSET}", seed + k * FLOOR_SEED_OFFSET,
                             forget, "retrain") for k in range(_retrained_count(s))]
        if "ulira" in s["metrics"]:  # every row, the reference rows too (their replay: none, or retraining)
            needs += shadows("original", s["shadows"]) + shadows("retrained", s["shadows"], forget)
        if "rmia" in s["metrics"]:
            needs += shadows("half", s["reference_models"])
        cell_tasks.append(Task(key=f"cell:{_cell_key(method, forget, seed)}", fn=run_grid_cell,
                               args=(ctx, method, forget, seed), needs=tuple(needs), cell=True))
    return [*tasks.values(), *cell_tasks]


def _all_cells(bench: BenchPlan) -> list[tuple[int, list[int], str]]:
    return [(seed, forget, method) for seed in bench.seeds for forget in bench.forget_sets for method in bench.methods]


# ---------------------------------------------------------------- running the graph (the driver)

def run(bench: BenchPlan, out: str | Path, *, overwrite: bool = False, engine: Engine | None = None,
        only: str | None = None) -> Path | None:
    """Run every unfinished cell on `engine` (default: this process), then write the report; returns its path.

    One run at a time holds `results.jsonl`'s lock, and only this process (the driver) writes it; the folder's
    earlier results and models are checked against this config before anything is written; every result line
    carries the config's hash. A task that fails is written to `failures.jsonl`, the rest of the grid finishes,
    and `GridIncompleteError` is raised at the end (a rerun retries what failed). `only` runs one task of the
    graph (a key that `commands` prints), holding the lock only to check the folder and to append its line.
    """
    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    with exclusive_lock(results_path, wait_s=LOCK_WAIT_S if only else 0):
        ctx = _start(bench, out, overwrite)
        if only is None:
            return _run_graph(bench, ctx, engine or LocalEngine())
    return _run_one(bench, ctx, only)


LOCK_WAIT_S = 600.0
"""How long a single-task run (`--only`) waits for the results file's lock, which others hold only briefly."""


def _start(bench: BenchPlan, out: Path, overwrite: bool) -> GridContext:
    """Under the lock: the folder claimed for this config, config.json written, a half-written line cut."""
    fingerprint = data_fingerprint(bench.dataset)
    digest = config_hash(bench.cfg.raw, bench.settings, fingerprint)
    _claim(out, bench, digest, fingerprint, overwrite)
    write_json(out / "config.json", {"config": bench.cfg.raw, "bench": bench.settings, "config_hash": digest,
                                     "data_fingerprint": fingerprint,
                                     "versions": environment(resolve_device(bench.cfg.train.device))})
    drop_partial_line(out / "results.jsonl")
    _DATASETS[_data_key(bench.cfg)] = bench.dataset
    return GridContext(cfg=bench.cfg, settings=bench.settings, out=out, fingerprint=fingerprint,
                       cache_dir=Path(cache_dir()).resolve())


def _digest(ctx: GridContext) -> str:
    return config_hash(ctx.cfg.raw, ctx.settings, ctx.fingerprint)


def _run_graph(bench: BenchPlan, ctx: GridContext, engine: Engine) -> Path | None:
    results_path, failures_path = ctx.out / "results.jsonl", ctx.out / "failures.jsonl"
    done = {r["cell"] for r in read_results(results_path)}
    cells = _all_cells(bench)
    todo = [c for c in cells if _cell_key(c[2], c[1], c[0]) not in done]
    ctx.options().metric_names()  # an unknown metric is an error before anything trains
    failures_path.unlink(missing_ok=True)  # what failed last time is retried now
    failures: list[Failure] = []
    digest = _digest(ctx)
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=f"bench ({engine.name})",
               disable=not progress_enabled())

    def on_done(task: Task, record: dict) -> None:
        if task.cell:
            append_jsonl(results_path, {**record, "config_hash": digest})
            bar.update(1)
            bar.write(_summary_line(record))

    def on_failed(task: Task, failure: Failure) -> None:
        failures.append(failure)
        append_jsonl(failures_path, failure.as_dict())
        bar.write(f"FAILED {task.key} ({failure.kind}): {failure.error}: {failure.message}")

    try:
        engine.run(build_graph(bench, ctx, todo) if todo else [], on_done, on_failed)
    finally:
        bar.close()
    report = write_report(ctx.out, bench.dataset.classes, bench.settings) if read_results(results_path) else None
    if failures:
        cells_failed = sum(f.key.startswith("cell:") for f in failures)
        first = next((f for f in failures if f.kind != "dependency"), failures[0])
        raise GridIncompleteError(f"{len(failures)} task(s) failed ({cells_failed} cell(s) missing from the "
                                  f"report), first {first.key}: {first.error}: {first.message}; see "
                                  f"{failures_path}, fix the cause and rerun the same command to retry them")
    return report


def _summary_line(record: dict) -> str:
    return (f"{record['cell']:<28} ACC_r {record.get('acc_r_test', float('nan')):6.2f}  "
            f"ACC_f {record.get('acc_f_test', float('nan')):6.2f}  MIA-NN {_fmt(record.get('mia_nn'))}  "
            f"UTV {_fmt(record.get('utv_test'))}  {record['wall_seconds']:.1f}s")


def _run_one(bench: BenchPlan, ctx: GridContext, key: str) -> Path | None:
    """One task of the graph in this process (a Slurm array element): a training task writes its model; a cell
    task, whose models must exist, appends its line under the lock unless the cell is already there."""
    tasks = {t.key: t for t in build_graph(bench, ctx, _all_cells(bench))}
    if key not in tasks:
        raise ConfigError(f"--only {key!r} is not a task of this grid{did_you_mean(key, tasks)}; "
                          "`fastforget bench --print-commands` lists them")
    task = tasks[key]
    results_path = ctx.out / "results.jsonl"
    if task.cell and any(r["cell"] == key.removeprefix("cell:") for r in read_results(results_path)):
        return None
    missing = [n for n in task.needs if not (Path(tasks[n].product) / SIDECAR).is_file()]
    if missing:
        raise CheckpointError(f"{key} needs the model of {missing[0]}, which is not trained yet: run its command "
                              f"(--only {missing[0]}) first")
    started = time.time()
    value = task.fn(*task.args, *(tasks[n].product for n in task.needs))
    if not task.cell:
        return None
    value["execution"] = execution_record("local", None, started)
    with exclusive_lock(results_path, wait_s=LOCK_WAIT_S):
        if not any(r["cell"] == value["cell"] for r in read_results(results_path)):
            append_jsonl(results_path, {**value, "config_hash": _digest(ctx)})
    return None


def commands(bench: BenchPlan, out: str | Path, base: Sequence[str]) -> list[str]:
    """One self-contained shell command per task of the whole grid (`base` is the bench command without --out),
    in the order they can run: models first (independent of each other), then cells (independent of each other),
    then the plain command, which finds every cell done and writes the report. Each command resumes: a model or
    cell already there is not redone, and cells append to the same results.jsonl under its lock."""
    ctx = GridContext(cfg=bench.cfg, settings=bench.settings, out=Path(out), fingerprint={},
                      cache_dir=Path(cache_dir()).resolve())
    tasks = build_graph(bench, ctx, _all_cells(bench))
    plain = " ".join(shlex.quote(str(a)) for a in [*base, "--out", str(out)])
    lines = ["# 1. models (independent; run them all before the cells)"]
    lines += [f"{plain} --only {shlex.quote(t.key)}" for t in tasks if not t.cell]
    lines += ["# 2. cells (independent; each appends one line to results.jsonl)"]
    lines += [f"{plain} --only {shlex.quote(t.key)}" for t in tasks if t.cell]
    lines += ["# 3. tables and report (every cell is done: nothing is recomputed)", plain]
    return lines


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- tables and report (from results.jsonl alone)

RUNTIME_COLUMNS = {
    "wall_seconds": Column("wall_seconds", "seconds", "lower"),
    "peak_memory_bytes": Column("peak_memory_bytes", "peak MiB", "lower", decimals=1, scale=2**-20),
}


def columns() -> dict[str, Column]:
    """Every reported column: the registered metrics' and the methods' runtime."""
    return {**{c.key: c for metric in METRICS.values() for c in metric.columns}, **RUNTIME_COLUMNS}


def tables() -> dict[str, list[str]]:
    """table name -> its column keys, in the order the metrics registered, then the runtime (Figure 2 form)."""
    grouped: dict[str, list[str]] = {}
    for metric in METRICS.values():
        if metric.table is not None:
            grouped.setdefault(metric.table, []).extend(c.key for c in metric.columns if c.in_table)
    return {**grouped, "runtime": list(RUNTIME_COLUMNS)}


def table_titles() -> dict[str, str]:
    return {**TABLE_TITLES, "runtime": "Figure 2 form: runtime"}


@dataclass
class Stat:
    """One method's value of one column over its cells (forget sets x seeds)."""

    value: float  # mean over the cells
    interval: list[float] | None  # cells resampled around their own sample-bootstrap intervals
    n: int  # cells
    uninformative: int = 0  # cells whose attack could not tell its own members apart
    evidence: float | None = None  # the attack's own held-out AUC (mean over cells), shown with that mark


def summarise(records: list[dict], seed: int = 0) -> dict[str, dict[str, Stat]]:
    """method -> key -> Stat over the cells that have the key."""
    summary: dict[str, dict[str, Stat]] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        summary[method] = {}
        for key, column in columns().items():
            cells = [r for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
            if not cells:
                continue
            values = [r[key] for r in cells]
            stat = Stat(float(np.mean(values)), combine_cells(values, [r.get(f"{key}_ci") for r in cells], seed=seed),
                        len(cells))
            if column.informative:
                stat.uninformative = sum(r.get(column.informative) is False for r in cells)
                evidence = [r[column.evidence] for r in cells if isinstance(r.get(column.evidence), int | float)]
                stat.evidence = float(np.mean(evidence)) if evidence else None
            summary[method][key] = stat
    return summary


def _cell(stat: Stat | None, column: Column) -> str:
    if stat is None:
        return "-"
    return column.format(stat.value, stat.interval) + uninformative_mark(stat.uninformative, stat.n, stat.evidence)


def write_table(out: Path, name: str, summary: dict, keys: list[str], extra: dict[str, dict[str, str]] | None = None
                ) -> Path | None:
    keys = [k for k in keys if any(k in s for s in summary.values())]
    if not keys:
        return None
    known = columns()
    extra = extra or {}
    extra_cols = list(dict.fromkeys(c for cols in extra.values() for c in cols))
    headers = ["method"] + [known[k].label for k in keys] + extra_cols
    rows = [[method] + [_cell(stats.get(k), known[k]) for k in keys]
            + [extra.get(method, {}).get(c, "-") for c in extra_cols] for method, stats in summary.items()]
    md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    md += "".join("| " + " | ".join(row) + " |\n" for row in rows)
    atomic_write(out / f"{name}.md", lambda tmp: tmp.write_text(md))
    parts = ("value", "low", "high", "n", "uninformative")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method"] + [f"{k}_{part}" for k in keys for part in parts] + extra_cols)
            for method, stats in summary.items():
                cells = []
                for k in keys:
                    stat = stats.get(k)
                    cells += ["", "", "", 0, ""] if stat is None else [
                        stat.value, *(stat.interval or ["", ""]), stat.n,
                        stat.uninformative if known[k].informative else ""]
                writer.writerow([method] + cells + [extra.get(method, {}).get(c, "") for c in extra_cols])

    atomic_write(out / f"{name}.csv", write_csv)
    return out / f"{name}.md"


def _runtime_figure(out: Path, records: list[dict], dataset: str) -> Path | None:
    """Unlearning time per method: every timed cell as a dot (repeats show how much one method's time varies on
    a shared machine), the median as the bar; RWFT family, retrain and baselines told apart by colour."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from fastforget.metrics.plots import save_png

    times: dict[str, list[float]] = {}
    for r in records:
        if r["method"] != "original" and r.get("wall_seconds") is not None:
            times.setdefault(r["method"], []).append(max(float(r["wall_seconds"]), 1e-3))
    if not times:
        return None
    order = sorted(times, key=lambda m: float(np.median(times[m])))
    families = {"RWFT family (rw*)": "tab:red", "retrain (training time)": "tab:grey", "baselines": "tab:blue"}

    def colour(method: str) -> str:
        return families["RWFT family (rw*)"] if method.startswith("rw") else \
            families["retrain (training time)"] if method == "retrain" else families["baselines"]

    figure = Figure(figsize=(7.5, 0.38 * len(order) + 1.6), layout="constrained")
    axes = figure.subplots()
    for i, method in enumerate(order):
        median = float(np.median(times[method]))
        axes.barh(i, median, color=colour(method), alpha=0.6)
        axes.plot(times[method], [i] * len(times[method]), "o", color="black", markersize=3)
        spread = f" (n={len(times[method])}, {min(times[method]):.2f}-{max(times[method]):.2f})" \
            if len(times[method]) > 1 else ""
        axes.text(max(times[method]), i, f"  {median:.2f}s{spread}", va="center", fontsize=7)
    axes.set_yticks(range(len(order)), order)
    axes.set_xscale("log")
    axes.set_xlabel("wall seconds (log scale): bar = median, dots = each timed cell")
    axes.set_title(f"Unlearning time per method on {dataset} (Figure 2 form)")
    axes.legend(handles=[Patch(color=c, alpha=0.6, label=label) for label, c in families.items()],
                loc="lower right", fontsize=8)
    return save_png(figure, out / "runtime.png")


def _reassignment_figures(out: Path, records: list[dict], classes: list[str], settings: dict,
                          dataset: str) -> list[Path]:
    """Confusion matrices (original, the shown method, retrained), where the forgotten class goes (the method
    beside retrained, one class order and axis) and the retained classes' accuracy drop, all on the test split."""
    from fastforget.metrics.plots import plot_accuracy_drop, plot_confusion_matrices, plot_where_it_goes
    from fastforget.metrics.reassignment import ClassShare, Reassigned

    single = [r for r in records if len(r["forget"]) == 1 and "confusion_test" in r]
    if not single:
        return []
    wanted = settings.get("reassignment_class")
    target = resolve_classes([wanted], classes)[0] if wanted not in ("", None) else single[0]["forget"][0]
    seed = min(r["seed"] for r in single)
    by_method = {r["method"]: r for r in single if r["forget"] == [target] and r["seed"] == seed}
    shown = settings.get("reassignment_method", "rwft-2-o")
    if shown not in by_method:
        shown = next((m for m in by_method if m not in REFERENCE_ROWS), None)
    where = f"{classes[target]} forgotten, test split, {dataset}, seed {seed}"
    matrices = {name: np.asarray(by_method[m]["confusion_test"]) for name, m in
                (("original", "original"), (shown, shown), ("retrained", "retrain")) if m in by_method}
    paths = []
    if matrices:
        paths.append(plot_confusion_matrices(matrices, out / "reassignment_confusion.png", class_names=classes,
                                             title=f"Confusion matrices: {where}"))
    moved = {}
    for m in (shown, "retrain"):
        found = by_method.get(m, {}).get("reassignment", {}).get("reassigned", [])
        if found:
            r = found[0]
            moved["retrained" if m == "retrain" else m] = Reassigned(
                r["forget_class"], r["n_samples"], [ClassShare(s["class_index"], s["share"]) for s in r["shares"]])
    if moved:
        paths.append(plot_where_it_goes(moved, out / "reassignment_where.png", class_names=classes,
                                        title=f"Where {classes[target]} goes: {' beside '.join(moved)}\n{where}"))
    drops = {("retrained" if m == "retrain" else m): [(d["class_index"], d["drop"]) for d in drop]
             for m in (shown, "retrain")
             if (drop := by_method.get(m, {}).get("reassignment", {}).get("accuracy_drop"))}
    if drops:
        paths.append(plot_accuracy_drop(drops, out / "accuracy_drop.png", class_names=classes,
                                        title=f"Retained classes' accuracy drop: {' beside '.join(drops)}\n{where}"))
    return paths


def _plan_order(records: list[dict], methods: Sequence[str]) -> list[dict]:
    """Cells in the grid's order (methods as configured, then seed and forget set), whatever order they finished
    in, so that tables (row order, and means summed in one order) do not depend on the engine."""
    rank = {m: i for i, m in enumerate(methods)}
    return sorted(records, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["seed"], r["forget"]))


def cells_sharing_a_device(records: list[dict]) -> int:
    """How many cells ran while another cell ran on the same device (the same node and visible GPUs; on a CPU the
    node's cores): their wall times include the sharing (two cells on two cores doubled per-cell time here)."""
    spans: dict[tuple, list[tuple[float, float]]] = {}
    for record in records:
        where = record.get("execution") or {}
        if "started" in where:
            key = (where.get("node"), where.get("cuda_visible_devices"))
            spans.setdefault(key, []).append((where["started"], where["finished"]))
    return sum(any(start < other_end and other_start < end for j, (other_start, other_end) in enumerate(group)
                   if j != i) for group in spans.values() for i, (start, end) in enumerate(group))


def _samples_line(records: list[dict]) -> str:
    evaluated = {(r.get("train_samples_evaluated"), r.get("train_samples_total")) for r in records}
    parts = [f"the whole training split ({n:,} samples)" if n == total else
             f"a class-stratified subsample of {n:,} of its {total:,} samples (bench.train_samples)"
             for n, total in sorted(evaluated, key=str) if n is not None]
    return "Train-split metrics on " + (" / ".join(parts) or "an unrecorded part of the training split") + \
        "; the test split whole."


INSTANT_SECONDS = 0.1  # below this a method's time is the timer's own bookkeeping: a ratio to retraining is noise


def _speedup(retrain_seconds: float, seconds: float) -> str:
    return "instant" if seconds < INSTANT_SECONDS else f"{retrain_seconds / seconds:.1f}x"


def write_report(out: str | Path, classes: list[str], settings: dict) -> Path:
    """Tables (.md, .csv), figures (.png) and report.md, from results.jsonl alone."""
    out = Path(out)
    records = _plan_order(read_results(out / "results.jsonl"), settings.get("methods", []))
    if not records:
        raise ConfigError(f"{out / 'results.jsonl'} holds no finished cell yet: run the benchmark first")
    summary = summarise(records, seed=settings.get("eval_seed", 0))
    retrain = summary.get("retrain", {}).get("wall_seconds")
    speedup = {m: {"speed-up vs retrain": _speedup(retrain.value, s["wall_seconds"].value)}
               for m, s in summary.items() if retrain is not None and m not in REFERENCE_ROWS
               and "wall_seconds" in s and s["wall_seconds"].value > 0}
    written = {name: write_table(out, name, summary, keys, speedup if name == "runtime" else None)
               for name, keys in tables().items()}
    shared = cells_sharing_a_device(records)
    if shared and written.get("runtime") is not None:
        warning = (f"\n**Warning:** {shared} of {len(records)} cells ran while another cell ran on the same device "
                   "(node and GPUs, or the node's CPU cores): their seconds include the sharing and are not the "
                   "method's cost alone; compare methods timed alone (`--engine local`, or one cell per GPU).\n")
        text = written["runtime"].read_text() + warning
        atomic_write(written["runtime"], lambda tmp: tmp.write_text(text))
    dataset = (_read_json(out / "config.json") or {}).get("config", {}).get("data", {}).get("name", "")
    figures = [p for p in [_runtime_figure(out, records, dataset),
                           *_reassignment_figures(out, records, classes, settings, dataset)] if p is not None]
    cells = len(records)
    forget_sets = sorted({tuple(r["forget_names"]) for r in records})
    seeds = sorted({r["seed"] for r in records})
    versions = records[-1].get("versions", {})
    lines = [
        "# fastforget benchmark report", "",
        f"{cells} cells: methods x {len(forget_sets)} forget set(s) x {len(seeds)} seed(s) {seeds}. "
        f"Device: {versions.get('device')} ({versions.get('gpu') or versions.get('platform')}); fastforget "
        f"{versions.get('fastforget')} (commit {versions.get('git_commit')}), torch {versions.get('torch')}.", "",
        _samples_line(records), "",
        "Each value is the mean over a method's cells, with its 95% interval `[low, high]`: a bootstrap over the "
        "samples of each cell (forget samples for UTV, MIA-NN, U-LIRA; the split's samples for accuracy; the "
        "attack's scored samples for MIA), and with several cells the cells resampled around their own intervals. "
        "An attack whose own held-out AUC lies inside the 99% band that a membership-blind attack reaches by chance "
        "(permutation null, see bench/README.md) is marked uninformative: its score says nothing. Arrows: higher "
        "(↑) or lower (↓) is better, →50 / →0.5: closest to chance is ideal. Peak memory: "
        f"{next((r['peak_memory_kind'] for r in records if r.get('peak_memory_kind')), 'not measured')}; "
        "the retrain row's time is the retrained model's training time.", "",
        *[f"- `{name}`: {metric.summary}" for name, metric in METRICS.items() if metric.table], "",
    ]
    titles = table_titles()
    for name, path in written.items():
        if path is not None:
            lines += [f"## {titles[name]}", "", path.read_text(), f"([csv]({name}.csv))", ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    lines += [f"Raw results: [results.jsonl](results.jsonl), one line per cell; settings: {json.dumps(settings)}"]
    report = out / "report.md"
    atomic_write(report, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return report
