"""The command-line contract (SPEC "Command-line contract") end to end on digits with tiny settings.

Commands run through `fastforget.cli.main()` in-process, so that its argv expansion, exit codes and error printing
are what is tested; one run goes through the installed console script to check the real process's exit status.
"""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastforget import cli
from fastforget.checkpoint import load_checkpoint
from fastforget.data import load_dataset
from fastforget.inference import accuracy, predict_logits
from fastforget.unlearn import METHODS

TINY = ["--config", "digits", "--epochs", "3", "--set", "model.width=8"]
TRAIN_CONTRACT = {"arch", "dataset", "classes", "excluded", "seed", "test_accuracy"}
UNLEARN_CONTRACT = {"method", "forget", "hyperparameters", "wall_seconds", "peak_memory_bytes"}
EVAL_CONTRACT = {"acc_r_test", "acc_f_test", "acc_r_train", "acc_f_train", "mia", "mia_nn", "mia_nn_class",
                 "utv_train", "utv_test"}
DIGITS = [str(d) for d in range(10)]


@dataclass
class Run:
    code: int
    out: str
    err: str


def fastforget(*args: object) -> Run:
    """`fastforget ARGS` through `cli.main()`, with its output captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(stdout), redirect_stderr(stderr):
        patch.setattr(sys, "argv", ["fastforget", *map(str, args)])
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
    return Run(code, stdout.getvalue(), stderr.getvalue())


def sidecar(run_dir: Path) -> dict:
    return json.loads((run_dir / "model.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    """An original, a model retrained without 3, and the original unlearned with RWFT-2-O, all by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    paths = SimpleNamespace(root=root, original=root / "original", retrained=root / "retrained",
                            unlearned=root / "unlearned")
    paths.train = fastforget("train", *TINY, "--out", paths.original)
    paths.retrain = fastforget("train", *TINY, "--exclude", "3", "--out", paths.retrained)
    paths.unlearn = fastforget("unlearn", "--method", "rwft-2-o", "--checkpoint", paths.original, "--forget", "3",
                               "--out", paths.unlearned, "--hp", "batch_size=16")
    return paths


def test_train_writes_weights_and_the_contract_sidecar(runs):
    assert runs.train.code == 0, runs.train.err
    assert (runs.original / "model.safetensors").is_file()
    meta = sidecar(runs.original)
    assert TRAIN_CONTRACT <= set(meta)
    assert (meta["arch"], meta["dataset"], meta["classes"], meta["excluded"]) == ("cnn", "digits", DIGITS, [])
    assert (meta["seed"], meta["epochs"], meta["arch_args"]["width"]) == (0, 3, 8)  # --epochs and --set applied
    # The accuracy recorded is that of the weights written.
    model, _ = load_checkpoint(runs.original)
    digits = load_dataset("digits")
    measured = accuracy(predict_logits(model, digits.test_images, digits), digits.test_labels)
    assert meta["test_accuracy"] == pytest.approx(measured)
    assert meta["test_accuracy"] > 50
    assert f"{meta['test_accuracy']:.2f}" in runs.train.out


def test_train_exclude_leaves_the_class_out(runs):
    assert runs.retrain.code == 0, runs.retrain.err
    meta = sidecar(runs.retrained)
    assert (meta["excluded"], meta["excluded_names"]) == ([3], ["3"])
    digits = load_dataset("digits")
    assert meta["train_size"] == int((digits.train_labels != 3).sum())


def test_unlearn_writes_the_contract_sidecar(runs):
    assert runs.unlearn.code == 0, runs.unlearn.err
    meta = sidecar(runs.unlearned)
    assert (UNLEARN_CONTRACT | TRAIN_CONTRACT) <= set(meta)
    assert (meta["method"], meta["forget"], meta["hyperparameters"]["batch_size"]) == ("rwft-2-o", [3], 16)
    assert meta["wall_seconds"] > 0 and isinstance(meta["peak_memory_bytes"], int)
    assert "ACC_f test %" in runs.unlearn.out


def test_unlearn_forgets_several_classes_from_the_safetensors_file(runs, tmp_path):
    run = fastforget("unlearn", "--method", "rwft-2-o", "--checkpoint", runs.original / "model.safetensors",
                     "--forget", "3", "8", "--out", tmp_path, "--hp", "batch_size=16", "--hp", "epochs=1")
    assert run.code == 0, run.err
    meta = sidecar(tmp_path)
    assert (meta["forget"], meta["forget_names"]) == ([3, 8], ["3", "8"])
    assert meta["hyperparameters"]["epochs"] == 1
    assert "forgot 3, 8" in run.out


def test_unlearn_compile_flag_compiles_the_method(runs, tmp_path, monkeypatch):
    """--compile reaches the method's loop (TorchDynamo capture, eager backend: Inductor takes minutes here)."""
    import torch._dynamo

    import fastforget.train as train_module

    monkeypatch.setattr(train_module, "COMPILE_BACKEND", "eager")
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    run = fastforget("unlearn", "--method", "ft", "--checkpoint", runs.original, "--forget", "3", "--out", tmp_path,
                     "--compile", "--hp", "epochs=1", "--set", "train.amp=false")
    assert run.code == 0, run.err
    assert sidecar(tmp_path)["config"]["train"]["compile"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before


def test_unlearn_list_names_every_registered_method():
    run = fastforget("unlearn", "--list")
    assert run.code == 0, run.err
    listed = {line.split()[0] for line in run.out.splitlines() if line and not line.startswith(" ")}
    assert listed == set(METHODS)


def test_eval_prints_a_table_and_writes_json_and_plots(runs, tmp_path):
    report_path, plots = tmp_path / "eval.json", tmp_path / "plots"
    run = fastforget("eval", "--checkpoint", runs.unlearned, "--original", runs.original,
                     "--retrained", runs.retrained, "--json", report_path, "--plots", plots)
    assert run.code == 0, run.err
    report = json.loads(report_path.read_text())
    assert EVAL_CONTRACT <= set(report)
    assert report["forget"] == [3] and report["skipped"] == {}
    assert "rwft-2-o on digits, forgetting 3; train split: all 1,257 samples" in run.out
    for label, key, digits in (("ACC_r ↑", "acc_r_test", 2), ("MIA % ↑", "mia", 2), ("UTV test ↓", "utv_test", 4)):
        low, high = report[f"{key}_ci"]
        assert f"{label:<22} {report[key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]" in run.out
    mia_line = next(line for line in run.out.splitlines() if "MIA % ↑" in line)
    assert ("uninformative (attack AUC" in mia_line) == (not report["mia_informative"])  # never a bare score
    assert f"wrote {report_path}" in run.out
    assert sorted(p.name for p in plots.iterdir()) == ["accuracy_drop.png", "confusion.png", "reassignment_3.png"]


UNLEARN = ["unlearn", "--checkpoint", "{original}", "--out", "{out}", "--method", "rwft-2-o"]
ERRORS = {
    "unknown method": ([*UNLEARN[:-1], "no-such-method", "--forget", "3"],
                       ["unknown method 'no-such-method'", "unlearn --list", "rwft-2-o"]),
    "unknown class": ([*UNLEARN, "--forget", "eleven"], ["unknown class 'eleven'", "Valid classes", "0=0", "9=9"]),
    "forget every class": ([*UNLEARN, "--forget", *DIGITS], ["every class"]),
    "exclude every class": (["train", *TINY, "--exclude", *DIGITS, "--out", "{out}"], ["exclude every class"]),
    "config of another data set": ([*UNLEARN, "--forget", "3", "--config", "mnist-resnet18"],
                                   ["'mnist'", "'digits'", "--config"]),
    "missing checkpoint": (["eval", "--checkpoint", "{out}/absent"], ["no checkpoint at", "absent"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_exits_2_with_one_line_naming_the_problem(runs, tmp_path, case):
    args, fragments = ERRORS[case]
    out = tmp_path / "out"
    run = fastforget(*[arg.format(original=runs.original, out=out) for arg in args])
    assert run.code == 2, (run.code, run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()  # a failed command writes nothing


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    script = Path(sys.executable).with_name("fastforget")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    done = subprocess.run([script, "eval", "--checkpoint", tmp_path / "absent"], capture_output=True, text=True,
                          env={**os.environ, "FASTFORGET_PROGRESS": "0"}, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no checkpoint at"), done.stderr


def test_the_installed_command_runs_a_bench_grid_in_a_fresh_process(tmp_path):
    """`fastforget bench` (what `make demo` runs) from a clean interpreter, where no test has imported anything."""
    script = Path(sys.executable).with_name("fastforget")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    env = {**os.environ, "FASTFORGET_PROGRESS": "0", "FASTFORGET_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([script, "bench", "--out", tmp_path / "grid", "--methods", "original,rw-mask", "--forget",
                           "3", "--set", "train.epochs=2", "model.width=8", "bench.retrained_seeds=1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "table2_accuracy_mia" in done.stdout and (tmp_path / "grid" / "report.md").is_file()


def test_data_prepare_writes_beton_files(tmp_path):
    from fastforget.data.ffcv import ffcv_available

    if not ffcv_available():
        pytest.skip("ffcv is not installed")
    run = fastforget("data", "prepare", "digits", "--out", tmp_path)
    assert run.code == 0, run.err
    paths = json.loads(run.out)
    assert paths == {"train": str(tmp_path / "train.beton"), "test": str(tmp_path / "test.beton")}
    digits = load_dataset("digits")
    for split, path in paths.items():
        # each sample holds at least its 64 pixels
        assert Path(path).stat().st_size > 64 * len(getattr(digits, f"{split}_labels")), split



# --- errors: one line, a traceback only when asked, hints that name real flags ------------------------------------

def test_debug_shows_the_traceback_of_an_error(tmp_path, monkeypatch):
    quiet = fastforget("eval", "--checkpoint", tmp_path / "absent")
    assert quiet.code == 2 and "Traceback" not in quiet.err
    for run in (fastforget("eval", "--checkpoint", tmp_path / "absent", "--debug"),
                (monkeypatch.setenv("FASTFORGET_DEBUG", "1"), fastforget("eval", "--checkpoint", tmp_path))[1]):
        assert run.code == 2
        assert "Traceback" in run.err and "CheckpointError" in run.err
        assert run.err.strip().splitlines()[-1].startswith("error: no checkpoint at")


def test_a_bug_is_one_line_that_says_how_to_see_it(monkeypatch):
    from fastforget import api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(api, "train", broken)
    run = fastforget("train", "--out", "x")
    assert run.code == 1
    assert run.err.strip().splitlines() == ["error: internal error (ZeroDivisionError: division by zero): this is a "
                                            "bug in fastforget; rerun with --debug (or FASTFORGET_DEBUG=1) to see "
                                            "the traceback, and report it"]


def test_an_interrupt_exits_130_and_says_work_is_kept(monkeypatch):
    from fastforget import api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "bench", interrupted)
    run = fastforget("bench", "--out", "x")
    assert run.code == 130 and "rerun the same command to resume" in run.err and "Traceback" not in run.err


def _cli_flags() -> set[str]:
    import typer.main

    flags: set[str] = {"--help"}
    stack = [typer.main.get_command(cli.app)]
    while stack:
        command = stack.pop()
        stack += list(getattr(command, "commands", {}).values())
        flags |= {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    return flags


def test_every_flag_a_message_names_exists():
    """Hints and help texts name only flags that some command has (issue 12: `--root` outside `data prepare`)."""
    import ast
    import re

    package = Path(cli.__file__).parent
    named: dict[str, str] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value):
                    named.setdefault(flag, str(path.relative_to(package)))
    named.pop("--short", None)  # git rev-parse's own flag (runtime.py), not a hint
    for flag in ("--standalone", "--nproc"):  # torchrun's own flags, in the hint of `train --ddp`
        named.pop(flag, None)
    unknown = {flag: where for flag, where in named.items() if flag not in _cli_flags()}
    assert not unknown, unknown
    assert {"--out", "--overwrite", "--hp", "--set", "--debug"} <= set(named)


def test_sidecars_record_what_decides_repeatability_and_a_rerun_repeats_bit_for_bit(runs, tmp_path):
    """README "Reproducibility": the same seed with the recorded thread count gives the same weights, bit for bit."""
    import torch

    versions = sidecar(runs.original)["versions"]
    assert isinstance(versions["torch_threads"], int) and versions["torch_threads"] >= 1
    assert versions["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    assert {"torch_interop_threads", "omp_num_threads", "cudnn_deterministic", "cudnn_benchmark"} <= set(versions)
    threads = torch.get_num_threads()  # other tests (FFCV's writer) may have changed it since the fixture ran
    torch.set_num_threads(versions["torch_threads"])
    try:
        again = fastforget("train", *TINY, "--out", tmp_path / "again")
    finally:
        torch.set_num_threads(threads)
    assert again.code == 0, again.err
    assert sidecar(tmp_path / "again")["versions"]["torch_threads"] == versions["torch_threads"]
    assert sidecar(tmp_path / "again")["weights_sha256"] == sidecar(runs.original)["weights_sha256"]
