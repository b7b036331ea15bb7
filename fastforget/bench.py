"""The benchmark grid behind `fastforget bench`: which method, how well, how fast, for one setting.

For each seed it trains (or reuses) the original; for each forget set, the retrained gold standard (plus extra
retrained seeds for the UTV floor); then runs every method and every metric, appending one JSON line per finished
cell to `results.jsonl`. A killed run is resumed by running the same command: finished cells are skipped and
models are reused after their sidecars are checked. Tables, figures and `report.md` are computed from the JSON
lines alone (`write_report`), so they can be rebuilt at any time.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fastforget.api import method_replay
from fastforget.checkpoint import load_checkpoint, save_checkpoint
from fastforget.config import Config, load_config
from fastforget.data import ImageDataset, load_dataset, resolve_classes
from fastforget.data.sources import cache_dir
from fastforget.errors import ConfigError
from fastforget.evaluate import AttackSetup, evaluate, model_outputs, train_rows
from fastforget.io import append_jsonl, atomic_write, write_json
from fastforget.metrics.intervals import combine_cells
from fastforget.metrics.registry import (
    METRICS,
    SETTINGS,
    TABLE_TITLES,
    Column,
    EvalOptions,
    Outputs,
    default_metrics,
    uninformative_mark,
)
from fastforget.runtime import environment, progress_enabled, resolve_device
from fastforget.shadows import recipe_key
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

    cfg = load_config(config, overrides)
    settings = {**BENCH_DEFAULTS, **cfg.raw.get("bench", {})}
    unknown = set(settings) - set(BENCH_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown [bench] setting(s) {sorted(unknown)}; known: {sorted(BENCH_DEFAULTS)}")
    if methods:
        settings["methods"] = list(methods)
    if seeds:
        settings["seeds"] = seeds
    for name, variant in settings["variants"].items():
        if variant.get("method") not in METHODS:
            raise ConfigError(f"[bench.variants.{name!r}] needs method = one of {sorted(METHODS)}")
    bad = [m for m in settings["methods"] if m not in METHODS and m not in REFERENCE_ROWS
           and m not in settings["variants"]]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; `fastforget unlearn --list` shows them")
    dataset = load_dataset(cfg.data["name"], cfg.data.get("root") or None)
    spec = list(forget) if forget else settings["forget"]
    if spec == "all":
        forget_sets = [[c] for c in range(dataset.num_classes)]
    else:
        forget_sets = [resolve_classes(item if isinstance(item, list) else [item], dataset.classes) for item in spec]
    first_seed = cfg.train.seed
    return BenchPlan(cfg=cfg, dataset=dataset, methods=list(settings["methods"]), forget_sets=forget_sets,
                     seeds=[first_seed + i for i in range(settings["seeds"])], settings=settings)


def read_results(path: str | Path) -> list[dict]:
    """The finished cells; a line cut off by a kill is ignored (it is redone)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


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


def _model(folder: Path, bench: BenchPlan, *, seed: int, exclude: Sequence[int], desc: str) -> tuple:
    """Reuse the model in `folder` if its sidecar matches this config, seed and exclusion; else train it."""
    key = recipe_key(bench.cfg)
    if (folder / "model.json").is_file():
        model, meta = load_checkpoint(folder)
        expected = {"seed": seed, "excluded": sorted(exclude), "recipe_key": key}
        found = {k: meta.get(k) for k in expected}
        if found != expected:
            raise ConfigError(f"{folder} holds a model trained with {found}, not {expected}: this output folder "
                              "belongs to another config; use a fresh --out or delete the folder")
        return model, meta
    trained = train_model(bench.cfg, exclude=sorted(exclude), seed=seed, dataset=bench.dataset, desc=desc)
    trained.meta["recipe_key"] = key
    save_checkpoint(folder, trained.model, trained.meta)
    return trained.model.eval(), trained.meta


def run(bench: BenchPlan, out: str | Path) -> Path:
    """Run every unfinished cell, then write the report; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    write_json(out / "config.json", {"config": bench.cfg.raw, "bench": bench.settings,
                                     "versions": environment(resolve_device(bench.cfg.train.device))})
    drop_partial_line(results_path)
    done = {r["cell"] for r in read_results(results_path)}
    s = bench.settings
    options = EvalOptions(metrics=tuple(s["metrics"]), seed=s["eval_seed"], train_samples=s["train_samples"],
                          cache_dir=cache_dir(),
                          settings={"shadows": s["shadows"], "reference_models": s["reference_models"]})
    options.metric_names()  # an unknown metric is an error before anything trains
    attack = AttackSetup(bench.cfg, cache_dir())
    cells = [(seed, forget, method) for seed in bench.seeds for forget in bench.forget_sets for method in bench.methods]
    todo = [(seed, forget, method) for seed, forget, method in cells if _cell_key(method, forget, seed) not in done]
    device = resolve_device(bench.cfg.train.device)
    rows = train_rows(bench.dataset, options.train_samples, options.seed)
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="bench", disable=not progress_enabled())
    cache: dict[tuple, tuple] = {}
    for seed, forget, method in todo:
        models = out / "models"
        if ("original", seed) not in cache:
            cache = {k: v for k, v in cache.items() if k[1] != seed - 1}  # keep memory flat across seeds
            model, meta = _model(models / f"original-s{seed}", bench, seed=seed, exclude=[], desc="original")
            cache[("original", seed)] = (model, meta, model_outputs(model, bench.dataset, rows))
        if (_tag(forget), seed) not in cache:
            retrained = [_model(models / f"retrained-{_tag(forget)}-s{seed + k * FLOOR_SEED_OFFSET}", bench,
                                seed=seed + k * FLOOR_SEED_OFFSET, exclude=forget, desc="retrain")
                         for k in range(max(1, s["retrained_seeds"]))]
            cache[(_tag(forget), seed)] = ([model_outputs(m, bench.dataset, rows) for m, _ in retrained], retrained[0])
        original, original_meta, original_out = cache[("original", seed)]
        retrained_outs, (gold_model, gold_meta) = cache[(_tag(forget), seed)]
        record = _run_cell(bench, method, forget, seed, original, original_meta, original_out, retrained_outs,
                           gold_model, gold_meta, options, attack, device)
        append_jsonl(results_path, record)
        bar.update(1)
        bar.write(f"{record['cell']:<28} ACC_r {record.get('acc_r_test', float('nan')):6.2f}  "
                  f"ACC_f {record.get('acc_f_test', float('nan')):6.2f}  MIA-NN {_fmt(record.get('mia_nn'))}  "
                  f"UTV {_fmt(record.get('utv_test'))}  {record['wall_seconds']:.1f}s")
    bar.close()
    return write_report(out, bench.dataset.classes, bench.settings)


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.3f}"


def _run_cell(bench: BenchPlan, method: str, forget: list[int], seed: int, original, original_meta: dict,
              original_out: Outputs, retrained_outs: list[Outputs], gold_model, gold_meta: dict,
              options: EvalOptions, attack: AttackSetup, device) -> dict:
    record = {"cell": _cell_key(method, forget, seed), "method": method, "forget": forget,
              "forget_names": [bench.dataset.classes[i] for i in forget], "seed": seed}
    memory_kind = ""
    base = bench.settings["variants"].get(method, {}).get("method", method)
    if method == "original":
        model, hp, wall, memory = original, {}, 0.0, None
    elif method == "retrain":  # the gold standard itself: retraining with the original's recipe and seed
        model, hp, wall, memory = gold_model, {}, gold_meta["train_seconds"], None
    else:
        ctx = UnlearnContext(original=original, meta=original_meta, dataset=bench.dataset, forget=forget,
                             cfg=bench.cfg, device=device, seed=seed)
        variant = dict(bench.settings["variants"].get(method, {"method": method}))
        result = run_method(variant.pop("method"), ctx, variant)
        model, hp, wall, memory = result.model, result.hyperparameters, result.wall_seconds, result.peak_memory_bytes
        memory_kind = result.memory_kind
    cached = {"original": original_out, "retrain": retrained_outs[0]}
    outputs = cached[method] if method in cached else model_outputs(model, bench.dataset, original_out.train_rows)
    # The retrain row is compared with the *other* retrained seeds: against itself its UTV would be 0 by definition.
    references = retrained_outs[1:] if method == "retrain" else retrained_outs
    replay = method_replay(base, hp, bench.cfg, bench.dataset, forget, device)
    metrics, skipped = evaluate(outputs, bench.dataset, forget, original=original_out, retrained=references,
                                options=options, method=base, hyperparameters=hp, attack=attack.for_method(replay),
                                device=device)
    if method == "retrain" and not references:
        skipped["utv"] = "the retrain row needs retrained_seeds >= 2 (a second retrained model to compare with)"
    return {**record, "wall_seconds": wall, "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
            "hyperparameters": hp, **metrics,
            "skipped": skipped, "versions": environment(device)}


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


def _runtime_figure(out: Path, summary: dict) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastforget.metrics.plots import save_png

    rows = [(m, s["wall_seconds"].value) for m, s in summary.items() if m != "original" and "wall_seconds" in s]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    colours = ["tab:red" if m.startswith("rw") else "tab:grey" if m == "retrain" else "tab:blue" for m, _ in rows]
    ax.barh([m for m, _ in rows], [max(v, 1e-3) for _, v in rows], color=colours)
    ax.set_xscale("log")
    ax.set_xlabel("wall seconds (log scale)")
    ax.set_title("Unlearning time per method (Figure 2 form)")
    for i, (_, v) in enumerate(rows):
        ax.text(max(v, 1e-3), i, f" {v:.2f}s", va="center", fontsize=8)
    fig.tight_layout()
    path = save_png(fig, out / "runtime.png")
    plt.close(fig)
    return path


def _reassignment_figures(out: Path, records: list[dict], classes: list[str], settings: dict) -> list[Path]:
    from fastforget.metrics.plots import plot_confusion_matrices, plot_reassignment
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
    matrices = {name: np.asarray(by_method[m]["confusion_test"]) for name, m in
                (("original", "original"), (shown, shown), ("retrained", "retrain")) if m in by_method}
    paths = []
    if matrices:
        paths.append(plot_confusion_matrices(matrices, out / "reassignment_confusion.png", class_names=classes))
    for m in (shown, "retrain"):
        moved = by_method.get(m, {}).get("reassignment", {}).get("reassigned", [])
        if moved:
            r = moved[0]
            shares = [ClassShare(s["class_index"], s["share"]) for s in r["shares"]]
            paths.append(plot_reassignment(Reassigned(r["forget_class"], r["n_samples"], shares),
                                           out / f"reassignment_{m}.png", class_names=classes))
    return paths


def _samples_line(records: list[dict]) -> str:
    evaluated = {(r.get("train_samples_evaluated"), r.get("train_samples_total")) for r in records}
    parts = [f"the whole training split ({n:,} samples)" if n == total else
             f"a class-stratified subsample of {n:,} of its {total:,} samples (bench.train_samples)"
             for n, total in sorted(evaluated, key=str) if n is not None]
    return "Train-split metrics on " + (" / ".join(parts) or "an unrecorded part of the training split") + \
        "; the test split whole."


def write_report(out: str | Path, classes: list[str], settings: dict) -> Path:
    """Tables (.md, .csv), figures (.png) and report.md, from results.jsonl alone."""
    out = Path(out)
    records = read_results(out / "results.jsonl")
    if not records:
        raise ConfigError(f"{out / 'results.jsonl'} holds no finished cell yet: run the benchmark first")
    summary = summarise(records, seed=settings.get("eval_seed", 0))
    retrain = summary.get("retrain", {}).get("wall_seconds")
    speedup = {m: {"speed-up vs retrain": f"{retrain.value / s['wall_seconds'].value:.1f}x"}
               for m, s in summary.items() if retrain is not None and m not in REFERENCE_ROWS
               and "wall_seconds" in s and s["wall_seconds"].value > 0}
    written = {name: write_table(out, name, summary, keys, speedup if name == "runtime" else None)
               for name, keys in tables().items()}
    figures = [p for p in [_runtime_figure(out, summary), *_reassignment_figures(out, records, classes, settings)]
               if p is not None]
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
