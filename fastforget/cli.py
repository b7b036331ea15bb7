"""`fastforget` on the command line: a thin layer over `fastforget.api`.

Options that take several classes (`--forget a b`, `--exclude`, `--retrained`) also accept repeats and commas.
A user error exits 2 with one line, `error: PROBLEM; FIX`; `--debug` (anywhere on the line) or FASTFORGET_DEBUG=1
adds the traceback. Nothing that holds a model or results is overwritten without `--overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer

from fastforget import api
from fastforget.bench import tables
from fastforget.errors import FastForgetError, OutputError
from fastforget.metrics.registry import METRICS, SETTINGS, default_metrics, get_metric, uninformative_mark

app = typer.Typer(help="fastforget: erase whole classes from image classifiers, fast, and measure how well.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # help text is plain: "[bench]" is a config table, not markup
data_app = typer.Typer(help="Data set utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")

VARIADIC = {"--forget", "--exclude", "--retrained", "--hp", "--set"}

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="config name in configs/ or a TOML file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config value: section.key=value")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace what --out already holds")]
TensorBoardOpt = Annotated[Path | None, typer.Option(
    "--tensorboard", help="write loss/accuracy curves to this TensorBoard log folder (needs fastforget[tensorboard])")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="cpu, cuda, cuda:N or auto (default: the config's train.device, auto)")]


def _curves(log_dir: Path | None) -> contextlib.AbstractContextManager:
    from fastforget import curves

    return curves.tensorboard(log_dir) if log_dir else contextlib.nullcontext()


def _device(device: str | None) -> list[str]:
    """--device as the config override it stands for."""
    return [f"train.device={device}"] if device else []


def _show_version(value: bool) -> None:
    if value:
        from fastforget import __version__

        typer.echo(f"fastforget {__version__}")
        raise typer.Exit()


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="show the traceback of an error (also FASTFORGET_DEBUG=1); accepted after any command")]
        = False,
        version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                              help="print the version and exit")] = False) -> None:
    """Options of every command (`main` reads --debug itself, wherever it is on the line)."""


def _split(values: list[str] | None) -> list[str]:
    return [v for value in values or [] for v in value.split(",") if v]


def _echo_kv(title: str, rows: dict) -> None:
    typer.echo(title)
    for key, value in rows.items():
        typer.echo(f"  {key:<22} {value:.2f}" if isinstance(value, float) else f"  {key:<22} {value}")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write model.safetensors + model.json")],
    config: ConfigOpt = "digits",
    exclude: Annotated[list[str] | None, typer.Option(help="classes to leave out (trains the retrained model)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs (default: the config's)")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    device: DeviceOpt = None,
    tensorboard: TensorBoardOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    ddp: Annotated[bool, typer.Option(
        "--ddp", help="data-parallel over the processes of torchrun (nccl on CUDA, gloo on CPU); same recipe and "
        "global batch, rank 0 writes the model")] = False,
    sync_bn: Annotated[bool, typer.Option(
        "--sync-bn", help="with --ddp on CUDA: BatchNorm statistics over the global batch")] = False,
) -> None:
    """Train an original model, or with --exclude the retrained gold standard.

    \b
    Example: fastforget train --config digits --exclude 3 --out runs/retrained-3

    On 8 GPUs of one node: torchrun --standalone --nproc_per_node=8 -m fastforget train --config cifar10-resnet18
    --out runs/original --ddp
    """
    overrides = [*(set_ or []), *(["train.compile=true"] if compile else []), *_device(device)]
    with _curves(tensorboard):
        trained = api.train(config, exclude=_split(exclude), seed=seed, epochs=epochs, out=out, overrides=overrides,
                            overwrite=overwrite, ddp=ddp, sync_batchnorm=sync_bn)
    meta = trained.meta
    if not meta:  # a rank other than 0 of a --ddp run: rank 0 reports
        return
    _echo_kv(f"trained {meta['arch']} on {meta['dataset']} -> {out}", {
        "excluded": ", ".join(meta["excluded_names"]) or "-",
        "test accuracy %": meta["test_accuracy"],
        "retained-class acc %": meta["test_accuracy_retained"],
        "seconds": meta["train_seconds"],
        "images / s": meta["images_per_second"],
    })


def _list_methods(config: str | None, overrides: list[str]) -> None:
    """Each method with the hyperparameters it would run with: its defaults, or with --config the config's
    `[unlearn.NAME]` values applied (marked *)."""
    from fastforget.config import load_config
    from fastforget.unlearn import METHODS
    from fastforget.unlearn.registry import merge_hyperparameters

    cfg = load_config(config, overrides) if config or overrides else None
    if cfg is not None:
        typer.echo(f"hyperparameters with {cfg.source or 'the defaults'} (* set by the config):")
    for method in sorted(METHODS.values(), key=lambda m: m.name):
        typer.echo(f"{method.name:<10} {method.summary}  [data: {method.data}]")
        table = cfg.method_overrides(method.name) if cfg is not None else {}
        values = merge_hyperparameters(method, table)
        if values:
            label = "effective" if cfg is not None else "defaults"
            typer.echo(f"           {label}: " + ", ".join(f"{k}={v}{'*' if k in table else ''}"
                                                         for k, v in values.items()))


def _parse_hp(values: list[str] | None) -> dict:
    from fastforget.config import parse_override

    for text in values or []:
        if "=" not in text:
            raise FastForgetError(f"--hp {text!r} must look like key=value (e.g. --hp epochs=5)")
    return {".".join(keys): value for keys, value in map(parse_override, values or [])}


@app.command()
def unlearn(
    method: Annotated[str | None, typer.Option(help="method name (see --list) [required unless --list]")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="the original: run folder or .safetensors [required unless --list]")] = None,
    forget: Annotated[list[str] | None, typer.Option(help="classes to forget, by name or index")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="run folder for the unlearned model [required unless --list]")] = None,
    config: ConfigOpt = None,
    hp: Annotated[list[str] | None, typer.Option(help="method hyperparameter: key=value")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: the original's)")] = None,
    list_: Annotated[bool, typer.Option(
        "--list", help="list the methods and their hyperparameters (with --config: the config's) and exit")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the method's training steps")] = False,
    device: DeviceOpt = None,
    tensorboard: TensorBoardOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Unlearn classes from a trained model with one method.

    \b
    Example: fastforget unlearn --method rwft-2-o --checkpoint runs/original --forget 3 --out runs/rwft-2-o

    \b
    What each method runs with on a config: fastforget unlearn --list --config digits
    """
    if list_:
        _list_methods(config, set_ or [])
        return
    missing = [flag for flag, value in [("--method", method), ("--checkpoint", checkpoint), ("--out", out)]
               if value is None]
    if missing:
        raise FastForgetError(f"unlearn needs {', '.join(missing)} (or --list)")
    overrides = [*(set_ or []), *(["train.compile=true"] if compile else []), *_device(device)]
    with _curves(tensorboard):
        meta = api.unlearn(method, checkpoint, _split(forget), config=config, overrides=overrides,
                           hyperparameters=_parse_hp(hp), out=out, seed=seed, overwrite=overwrite).meta
    _echo_kv(f"{method}: forgot {', '.join(meta['forget_names'])} -> {out}", {
        "ACC_r test %": meta["acc_r_test"],
        "ACC_f test %": meta["acc_f_test"],
        "original test acc %": meta["original_test_accuracy"],
        "wall seconds": meta["wall_seconds"],
        "peak memory MiB": meta["peak_memory_bytes"] / 2**20,
    })


def _eval_rows(report: dict) -> dict[str, str]:
    """The printed rows of `eval`: every column of every metric that ran, with its interval and its mark."""
    rows: dict[str, str] = {}
    for name in report["metrics_run"]:
        if name in report["skipped"]:
            continue
        metric = get_metric(name)
        for column in metric.columns:
            value = report.get(column.key)
            if value is None:
                continue
            mark = ""
            if column.informative and report.get(column.informative) is False:
                mark = uninformative_mark(1, 1, report.get(column.evidence))
            rows[column.label] = column.format(value, report.get(f"{column.key}_ci")) + mark
        if metric.notes is not None:
            rows |= dict(metric.notes(report, report["classes"]))
    return rows


def _train_split_line(report: dict) -> str:
    evaluated, total = report["train_samples_evaluated"], report["train_samples_total"]
    if evaluated == total:
        return f"train split: all {total:,} samples"
    return f"train split: a class-stratified subsample of {evaluated:,} of {total:,} samples (--train-samples)"


def _metric_help() -> str:
    return f"comma list of {','.join(METRICS)} (default: {','.join(default_metrics())})"


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Option(
        help="model to evaluate: run folder, .safetensors with its sidecar, or with --arch a state_dict file "
        "(.pt / .pth / .safetensors)")],
    forget: Annotated[list[str] | None, typer.Option(
        help="forget classes (default: from the sidecar: what an unlearned model forgot, what a retrained one "
             "excluded)")] = None,
    arch: Annotated[str | None, typer.Option(
        help="architecture of a model saved as a plain state_dict: torchvision:NAME, timm:NAME or resnet18, "
        "vgg19_bn, cnn (applies to --original and --retrained too)")] = None,
    data: Annotated[str | None, typer.Option(help="data set name (default: the sidecar's); needed with --arch")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(help="data folder (default: data.root, then $FASTFORGET_DATA)")]
    = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    original: Annotated[Path | None, typer.Option(help="the original model (accuracy drop, target UTV)")] = None,
    retrained: Annotated[list[Path] | None, typer.Option(
        help="retrained model(s), one with the evaluated model's seed; two or more give the UTV floor")] = None,
    metrics: Annotated[str | None, typer.Option(help=_metric_help())] = None,
    nearest: Annotated[str | None, typer.Option(help="MIA-NN's nearest class (default: from the retrained)")] = None,
    json_: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    plots: Annotated[Path | None, typer.Option(help="folder for confusion-matrix and reassignment PNGs")] = None,
    samples: Annotated[Path | None, typer.Option(
        help="write per-sample logits and attack features of every model (.npz) for re-analysis")] = None,
    shadows: Annotated[int, typer.Option(min=1, help="U-LIRA shadow pairs")] = SETTINGS["shadows"],
    reference_models: Annotated[int, typer.Option(min=1, help="RMIA reference models")] = SETTINGS["reference_models"],
    train_samples: Annotated[int, typer.Option(
        min=0, help="train-split metrics on a class-stratified subsample of this many samples (0: the whole split)")]
    = 0,
    eval_seed: Annotated[int, typer.Option(
        min=0, help="the evaluation seed (subsamples, bootstrap): keep it the same for every model you compare")]
    = 0,
    amp: Annotated[bool, typer.Option("--amp", help="run the models in bf16 autocast (~2x faster on CPU)")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --json file")] = False,
) -> None:
    """Evaluate an unlearned (or any) model: every registered metric that can run, each with its interval.

    \b
    Example: fastforget eval --checkpoint runs/rwft --original runs/orig --retrained runs/retrained --json r.json

    \b
    A model trained elsewhere (a plain state_dict):
    fastforget eval --checkpoint my.pt --arch torchvision:resnet18 --data cifar10 --forget 3
    """
    options = {"train_samples": train_samples, "seed": eval_seed, "amp": amp, "shadows": shadows,
               "reference_models": reference_models}
    report = api.evaluate(checkpoint, data, forget=_split(forget), original=original, retrained=retrained or [],
                          arch=arch, metrics=_split([metrics]) if metrics else None, nearest=nearest, json_path=json_,
                          plots_dir=plots, samples_path=samples, options=options, config=config,
                          overrides=[*(set_ or []), *_device(device)], data_dir=data_dir, overwrite=overwrite)
    _echo_kv(f"{report['method']} on {report['dataset']}, forgetting {', '.join(report['forget_names'])}; "
             f"{_train_split_line(report)}", _eval_rows(report))
    for metric, reason in report["skipped"].items():
        typer.echo(f"skipped {metric}: {reason}")
    for written in (json_, samples):
        if written:
            typer.echo(f"wrote {written}")


@app.command()
def audit(
    checkpoint: Annotated[Path, typer.Option(help="the model to audit: run folder or .safetensors")],
    original: Annotated[Path, typer.Option(help="the original model it was unlearned from")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for audit.json, audit.md, audit.html")],
    retrained: Annotated[list[Path] | None, typer.Option(
        help="retrained model(s), one with the audited model's seed (default: two are trained and cached)")] = None,
    forget: Annotated[list[str] | None, typer.Option(help="forget classes (default: from the sidecar)")] = None,
    config: ConfigOpt = None,
    metrics: Annotated[str | None, typer.Option(help=f"comma list of {','.join(METRICS)} (default: all)")] = None,
    shadows: Annotated[int, typer.Option(min=1, help="U-LIRA shadow pairs")] = SETTINGS["shadows"],
    reference_models: Annotated[int, typer.Option(min=2, help="RMIA reference models")] = SETTINGS["reference_models"],
    eval_seed: Annotated[int, typer.Option(min=0, help="the evaluation seed (subsamples, bootstrap, probe)")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace the audit files in --out")] = False,
) -> None:
    """Is the class gone? Every metric as a test against retraining, plus white-box checks; exit 0 when every
    informative test passes, 1 when one leaks, 2 on a usage error.

    Example: fastforget audit --checkpoint runs/rwft --original runs/orig --out runs/audit
    """
    options = {"seed": eval_seed, "shadows": shadows, "reference_models": reference_models}
    report = api.audit(checkpoint, original=original, out=out, retrained=retrained or [], forget=_split(forget),
                       config=config, metrics=_split([metrics]) if metrics else None, options=options,
                       overwrite=overwrite, echo=lambda line: typer.echo(line, err=True))
    for test in report["tests"]:
        typer.echo(f"  {test['label']:<38} {test['verdict']}")
    for metric, reason in [*report["skipped"].items(), *report["untested"].items()]:
        typer.echo(f"not tested {metric}: {reason}")
    typer.echo(f"{report['question']} {report['answer']} -> {out / 'audit.html'}")
    raise typer.Exit(report["exit_code"])


@app.command()
def bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for results.jsonl, tables, figures, report.md")],
    config: ConfigOpt = "digits",
    methods: Annotated[str | None, typer.Option(help="comma list of methods (default: the config's [bench])")] = None,
    forget: Annotated[list[str] | None, typer.Option(help="forget classes, one cell each (default: the config's)")]
    = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds")] = None,
    device: DeviceOpt = None,
    metrics: Annotated[str | None, typer.Option(help=_metric_help() + "; ulira and rmia train models of their own")]
    = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="if --out holds results of another config, move them to --out/superseded-HASH/ and "
        "start afresh")] = False,
    engine: Annotated[str, typer.Option(help="where tasks run: local (this process) or ray (a Ray cluster)")]
    = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join: auto or HOST:PORT (default: start one on this machine, on 127.0.0.1)")] = None,
    gpus_per_cell: Annotated[float | None, typer.Option(
        help="GPUs per cell task on Ray (0.25: four cells share a GPU; trainings take a whole GPU)")] = None,
    max_retries: Annotated[int | None, typer.Option(
        help="retries of a task whose Ray worker or node died (errors raised by a task are not retried)")] = None,
    print_commands: Annotated[bool, typer.Option(
        "--print-commands", help="print one command per task (models, cells, report) for Slurm or any scheduler, "
        "and exit")] = False,
    only: Annotated[str | None, typer.Option(help="run one task of the grid (a key from --print-commands)")] = None,
) -> None:
    """Run the grid (seeds x forget classes x methods x metrics); rerun the same command to resume.

    \b
    Example: fastforget bench --config digits --metrics accuracy,mia,mia_nn,utv,ulira,rmia --out runs/digits

    On a Ray cluster: fastforget bench --config cifar10-resnet18 --out runs/grid --engine ray --address auto
    """
    overrides = [*(set_ or []), *([_list_override("bench.metrics", _split([metrics]))] if metrics else [])]
    selection = dict(methods=_split([methods]) if methods else None, forget=_split(forget), seeds=seeds,
                     overrides=[*overrides, *_device(device)])
    if print_commands:
        typer.echo("\n".join(api.bench_commands(config, out=out, **selection)))
        return
    report = api.bench(config, out=out, overwrite=overwrite, engine=engine, address=address,
                       gpus_per_cell=gpus_per_cell, max_retries=max_retries, only=only, **selection)
    if report is not None:
        _print_tables(report)
    elif only:
        typer.echo(f"{only}: done -> {out}")


def _list_override(key: str, values) -> str:
    """A config override that sets `key` to a list of strings."""
    return f"{key}=[{', '.join(repr(str(v)) for v in values)}]"


def _print_tables(report: Path) -> None:
    for name in tables():
        table = report.parent / f"{name}.md"
        if table.is_file():
            typer.echo(f"\n{name}\n{table.read_text()}")
    typer.echo(f"report: {report}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/demo"),
    forget: Annotated[str, typer.Option(help="the digit to forget")] = "3",
) -> None:
    """The main job on built-in data: train, retrain, unlearn with every method, evaluate, report (digits).

    \b
    Example: fastforget demo --forget 5 --out runs/demo-5
    """
    typer.echo(f"fastforget demo: forgetting digit {forget} from a CNN trained on scikit-learn digits -> {out}")
    # The default metrics, not U-LIRA and RMIA: they train many models of their own.
    report = api.bench("digits", out=out, forget=[forget], overrides=[_list_override("bench.metrics",
                                                                                     default_metrics())])
    _print_tables(report)


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="digits, mnist, fashion-mnist, cifar10, cifar100, tinyimagenet")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for train.beton and test.beton "
                                             "(default: the cache folder that data.loader = 'ffcv' reads)")] = None,
    root: Annotated[Path | None, typer.Option(help="data folder (default: $FASTFORGET_DATA)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing .beton files")] = False,
) -> None:
    """Write FFCV .beton files for a data set, by default where data.loader = "ffcv" reads them (in
    $FASTFORGET_CACHE/ffcv/, keyed by the data's content), so that training does not write them itself.

    \b
    Example: fastforget data prepare cifar10
    """
    from fastforget.data import ffcv_folder, load_dataset
    from fastforget.data.ffcv import prepare
    from fastforget.io import check_output_dir

    data = load_dataset(dataset, root)
    out = ffcv_folder(data) if out is None else out
    check_output_dir(out)
    existing = [name for name in ("train.beton", "test.beton") if (out / name).exists()]
    if existing and not overwrite:
        raise OutputError(f"--out {out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    paths = prepare(data, out)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


def _expand_variadic(argv: list[str]) -> list[str]:
    """`--forget a b --out x` -> `--forget a --forget b --out x`, so multi-class options read naturally."""
    out: list[str] = []
    current = None
    for token in argv:
        if token.startswith("-"):
            current = token if token in VARIADIC else None
            out.append(token)
        elif current and out[-1] != current:
            out += [current, token]
        else:
            out.append(token)
    return out


def main() -> None:
    """The console script: run a command; a user error is one line on stderr and exit status 2."""
    warnings.filterwarnings("default", module="fastforget")
    _log_to_stderr()
    argv = sys.argv[1:]
    debug = "--debug" in argv or os.environ.get("FASTFORGET_DEBUG", "0") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        code = app(args=_expand_variadic(argv), prog_name="fastforget", standalone_mode=False)
    except FastForgetError as err:
        _fail(str(err), 2, debug)
    except typer.TyperException as err:  # usage: a missing or malformed option (the parser's own message)
        if type(err).__name__ == "NoArgsIsHelpError":  # the help was shown
            raise SystemExit(err.exit_code) from None
        context = getattr(err, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        _fail(f"{err.format_message()}{where}", err.exit_code, debug)
    except typer.Abort:
        _fail("aborted", 1, debug)
    except OSError as err:  # the file system refused: a path the checks could not foresee (disk full, ...)
        _fail(f"{err.strerror or err}: {err.filename or ''}; check the path, its permissions and free space", 2,
              debug)
    except Exception as err:
        _fail(f"internal error ({type(err).__name__}: {err}): this is a bug in fastforget; rerun with --debug (or "
              "FASTFORGET_DEBUG=1) to see the traceback, and report it", 1, debug)
    if code == 130:
        typer.secho("interrupted: finished work is kept; rerun the same command to resume", fg=typer.colors.RED,
                    err=True)
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _log_to_stderr() -> None:
    """fastforget's log lines (what it trains, what it found in the cache) on stderr; results stay on stdout.
    FASTFORGET_LOG sets the level (debug, info, warning; default info)."""
    logger = logging.getLogger("fastforget")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    level = os.environ.get("FASTFORGET_LOG", "info").upper()
    logger.setLevel(level if isinstance(logging.getLevelName(level), int) else logging.INFO)


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    raise SystemExit(code) from None


if __name__ == "__main__":
    main()
