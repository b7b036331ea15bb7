"""The battery of hostile and careless inputs (issue 12): every one exits 2 with one line that names the problem and
the fix, prints no traceback, and writes nothing: a failed command leaves every file it could reach as it was.
(The data-folder safety cases without a command, the converter script never run and the malicious pickle, are in
test_data_sources.py; kills between checkpoint writes in test_checkpoint.py.)

The cases run the CLI entry point in-process on tiny digits models (one epoch, width 4), so the whole battery takes
seconds; the data-loss and silent-wrong cases also check what was (not) written, the concurrency cases hold the
results lock the way a second process would.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_cli import fastforget

TINY = ["--set", "train.epochs=1", "--set", "model.width=4", "--set", "train.batch_size=256",
        "--set", "train.amp=false"]
GRID = ["--config", "digits", "--methods", "original,rw-mask", "--forget", "3", "--set", "train.epochs=1",
        "--set", "model.width=4", "--set", "train.batch_size=256", "--set", "train.amp=false",
        "--set", "bench.retrained_seeds=1", "--set", 'bench.metrics=["accuracy"]']
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    """Tiny digits models made by the CLI: a benchmark grid, whose original and retrained-without-3 models serve
    the other cases, and the original unlearned with rw-mask."""
    root = tmp_path_factory.mktemp("models")
    cache = tmp_path_factory.mktemp("cache")
    m = SimpleNamespace(root=root, cache=cache, grid=root / "grid", unlearned=root / "unlearned")
    m.original, m.retrained = m.grid / "models" / "original-s0", m.grid / "models" / "retrained-3-s0"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTFORGET_CACHE", str(cache))
        runs = [fastforget("bench", *GRID, "--out", m.grid),
                fastforget("unlearn", "--method", "rw-mask", "--checkpoint", m.original, "--forget", "3", "--out",
                           m.unlearned)]
    for run in runs:
        assert run.code == 0, run.err
    return m


def readonly_folder(case: Path) -> Path:
    """A folder this process cannot write: a chmod 555 one, or under /sys where permissions do not bind (root)."""
    if os.geteuid() != 0:
        folder = case / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _writable("/sys"):
        pytest.skip("running as root with no read-only folder to test against")
    return Path("/sys/fastforget-battery/out")


def _writable(folder: str) -> bool:
    try:
        probe = Path(folder) / ".fastforget-probe"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


# --- preparing hostile files ---------------------------------------------------------------------------------------

Prepare = Callable[[Path, SimpleNamespace], Callable[[], None] | None]


def copy_of(source: str) -> Prepare:
    def prepare(case: Path, m: SimpleNamespace) -> None:
        shutil.copytree(getattr(m, source), case / "ckpt")
    return prepare


def sidecar_edit(edit: Callable[[dict], object], *, keep_hash: bool = True) -> Prepare:
    """A copy of the original whose sidecar `edit` changed (in place, or by returning what to write instead)."""
    def prepare(case: Path, m: SimpleNamespace) -> None:
        shutil.copytree(m.original, case / "ckpt")
        meta = json.loads((case / "ckpt" / "model.json").read_text())
        if not keep_hash:  # as a sidecar from before the weights' hash and the data fingerprint were recorded
            meta.pop("weights_sha256")
            meta.pop("data_fingerprint")
        result = edit(meta)
        content = meta if result is None else result
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (case / "ckpt" / "model.json").write_bytes(data)
    return prepare


def write_file(relative: str, content: bytes | str = b"x") -> Prepare:
    def prepare(case: Path, m: SimpleNamespace) -> None:
        path = case / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return prepare


def grid_copy(edit: Callable[[Path], None] = lambda grid: None) -> Prepare:
    def prepare(case: Path, m: SimpleNamespace) -> None:
        shutil.copytree(m.grid, case / "grid")
        edit(case / "grid")
    return prepare


def unfinished(grid: Path) -> None:
    (grid / "results.jsonl").write_text("")  # killed before its first cell finished; its models are trained


def locked_grid(case: Path, m: SimpleNamespace) -> Callable[[], None]:
    """Another run holds the results lock (a separate open file description conflicts like another process)."""
    from fastforget.io import exclusive_lock

    shutil.copytree(m.grid, case / "grid")
    holder = exclusive_lock(case / "grid" / "results.jsonl")
    holder.__enter__()
    return lambda: holder.__exit__(None, None, None)


class Payload:
    """A pickle that runs a shell command when loaded by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_cifar100(case: Path, m: SimpleNamespace) -> None:
    folder = case / "evil" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps({b"fine_label_names": Payload(case / "pwned")}))


def readonly_out(case: Path, m: SimpleNamespace) -> None:
    (case / "readonly_path").write_text(str(readonly_folder(case)))


# --- the battery ---------------------------------------------------------------------------------------------------

@dataclass
class Case:
    args: list[str]
    says: list[str]  # fragments of the one error line: the problem and the fix
    prepare: Prepare | None = None
    needs: str = ""  # "mnist": skipped where the shared data are absent
    tags: list[str] = field(default_factory=list)


TRAIN = ["train", *TINY, "--out", "{out}"]
UNLEARN = ["unlearn", "--method", "rwft-2-o", "--checkpoint", "{original}", "--forget", "3", "--out", "{out}"]
EVAL = ["eval", "--checkpoint", "{unlearned}"]
EVAL_CKPT = ["eval", "--checkpoint", "{case}/ckpt", "--forget", "3"]

CASES: dict[str, Case] = {
    # -- data loss: nothing overwritten unasked, nothing written into an input, outputs checked before any work
    "unlearn --out is its own --checkpoint": Case(
        [*UNLEARN[:-1], "{original}"], ["is the folder of the input checkpoint", "give another --out"]),
    "unlearn --out is the folder of the --checkpoint file": Case(
        ["unlearn", "--method", "rw-mask", "--checkpoint", "{original}/model.safetensors", "--forget", "3", "--out",
         "{original}", "--overwrite"], ["is the folder of the input checkpoint", "--overwrite never writes"]),
    "train --out holds another model": Case(
        [*TRAIN[:-1], "{case}/ckpt"], ["already holds a model (original cnn on digits)", "pass --overwrite"],
        copy_of("original")),
    "unlearn --out holds another model": Case(
        [*UNLEARN[:-1], "{case}/ckpt"], ["already holds a model", "pass --overwrite"], copy_of("unlearned")),
    "train --out is an existing file": Case([*TRAIN[:-1], "{case}/file"], ["is a file, not a folder"],
                                            write_file("file")),
    "train --out lies under a file": Case([*TRAIN[:-1], "{case}/file/sub"], ["which is a file"], write_file("file")),
    "train --out is read-only": Case([*TRAIN[:-1], "{readonly}"], ["cannot be written", "choose a folder"],
                                     readonly_out),
    "unlearn --out is read-only": Case([*UNLEARN[:-1], "{readonly}"], ["cannot be written"], readonly_out),
    "unlearn --out is an existing file": Case([*UNLEARN[:-1], "{case}/file"], ["is a file"], write_file("file")),
    "eval --json is a folder": Case([*EVAL, "--json", "{case}"], ["is a folder: give a file path"]),
    "eval --json exists": Case([*EVAL, "--json", "{case}/eval.json"], ["already exists", "--overwrite"],
                               write_file("eval.json", "{}")),
    "eval --plots is a file": Case([*EVAL, "--plots", "{case}/file"], ["--plots", "is a file"], write_file("file")),
    "eval --json is read-only": Case([*EVAL, "--json", "{readonly}.json"], ["cannot be written"], readonly_out),
    "bench --out is an existing file": Case(["bench", *GRID, "--out", "{case}/file"], ["is a file"],
                                            write_file("file")),
    "data prepare --out holds .beton files": Case(
        ["data", "prepare", "digits", "--out", "{case}"], ["already holds train.beton", "--overwrite"],
        write_file("train.beton")),

    # -- benchmark folders: one writer, one config, validated before anything is written
    "bench rerun of a finished folder with another config": Case(
        ["bench", *GRID, "--set", "train.lr=0.01", "--out", "{case}/grid"],
        ["belongs to another config", "train.lr 0.05 -> 0.01", "fresh --out", "--overwrite"], grid_copy()),
    "bench rerun of an unfinished folder with another train.*": Case(
        ["bench", *GRID, "--set", "train.epochs=2", "--out", "{case}/grid"],
        ["belongs to another config", "train.epochs 1 -> 2"], grid_copy(unfinished)),
    "bench rerun with another unlearn.* hyperparameter": Case(
        ["bench", *GRID, "--set", "unlearn.ga.lr=0.01", "--out", "{case}/grid"], ["belongs to another config"],
        grid_copy()),
    "two bench runs into one --out at once": Case(
        ["bench", *GRID, "--out", "{case}/grid"], ["is being written by another fastforget run", f"pid {os.getpid()}",
                                                   "rerun this command to resume"], locked_grid),
    "bench --seeds -1": Case(["bench", *GRID, "--seeds", "-1", "--out", "{out}"],
                             ["--seeds must be an integer >= 1, not -1"]),
    "bench --seeds 0": Case(["bench", *GRID, "--seeds", "0", "--out", "{out}"],
                            ["--seeds must be an integer >= 1, not 0"]),
    "bench unknown [bench] key": Case(["bench", *GRID, "--set", "bench.seedz=2", "--out", "{out}"],
                                      ["unknown [bench] setting 'seedz'", "did you mean 'seeds'"]),
    "bench one shadow pair for ulira": Case(["bench", *GRID, "--metrics", "ulira", "--set", "bench.shadows=1",
                                             "--out", "{out}"], ["U-LIRA needs at least 3 pairs", "raise --shadows"]),
    "bench negative shadows": Case(["bench", *GRID, "--set", "bench.shadows=-1", "--out", "{out}"],
                                   ["bench.shadows must be an integer >= 0, not -1"]),
    "bench forget not a list": Case(["bench", *GRID, "--set", "bench.forget=3", "--out", "{out}"],
                                    ['bench.forget must be "all" or a list of classes', "not 3"]),
    "bench unknown metric": Case(["bench", *GRID, "--set", 'bench.metrics=["acuracy"]', "--out", "{out}"],
                                 ["acuracy", "did you mean 'accuracy'"]),
    "bench unknown method": Case(["bench", *GRID, "--methods", "rwft", "--out", "{out}"],
                                 ["unknown method(s) ['rwft']", "unlearn --list"]),
    "bench unknown forget class": Case(["bench", *GRID, "--forget", "eleven", "--out", "{out}"],
                                       ["unknown class 'eleven'"]),

    # -- configs and overrides (train): types, ranges, finite floats, known keys with a suggestion
    "--set train.epochs=-1": Case([*TRAIN, "--set", "train.epochs=-1"],
                                  ["train.epochs must be an integer >= 1, not -1"]),
    "--epochs -1": Case(["train", "--epochs", "-1", "--out", "{out}"],
                        ["train.epochs must be an integer >= 1, not -1 (from --epochs)"]),
    "--epochs 0": Case(["train", "--epochs", "0", "--out", "{out}"], ["must be an integer >= 1, not 0"]),
    "--epochs abc": Case(["train", "--epochs", "abc", "--out", "{out}"],
                         ["Invalid value for '--epochs'", "fastforget train --help"]),
    "--set nonexistent.key=1": Case([*TRAIN, "--set", "nonexistent.key=1"],
                                    ["unknown config section 'nonexistent'", "sections: data, model, train"]),
    "--set trian.epochs=1": Case([*TRAIN, "--set", "trian.epochs=1"], ["'trian'", "did you mean 'train'"]),
    "--set data.flipp=true": Case([*TRAIN, "--set", "data.flipp=true"], ["data.flipp", "did you mean 'flip'"]),
    "--set model.widht=16": Case([*TRAIN, "--set", "model.widht=16"], ["model.widht", "did you mean 'width'"]),
    "--set model.nonexistent=1": Case([*TRAIN, "--set", "model.nonexistent=1"],
                                      ["unknown setting model.nonexistent", "model takes arch, width"]),
    "--set train.epochs=abc": Case([*TRAIN, "--set", "train.epochs=abc"],
                                   ["train.epochs must be an integer >= 1, not 'abc'"]),
    "--set train.epochs=1.5": Case([*TRAIN, "--set", "train.epochs=1.5"],
                                   ["train.epochs must be an integer >= 1, not 1.5"]),
    "--set train.batch_size=0": Case([*TRAIN, "--set", "train.batch_size=0"],
                                     ["train.batch_size must be an integer >= 1, not 0"]),
    "--set train.schedule=bogus": Case([*TRAIN, "--set", "train.schedule=bogus"],
                                       ["train.schedule must be one of constant, step, onecycle, linear, not 'bogus'"]),
    "--set train.lr=-1": Case([*TRAIN, "--set", "train.lr=-1"], ["train.lr must be a number > 0, not -1.0"]),
    "--set train.lr=nan": Case([*TRAIN, "--set", "train.lr=nan"], ["train.lr must be a finite number > 0, not nan"]),
    "--set train.momentum=1.5": Case([*TRAIN, "--set", "train.momentum=1.5"],
                                     ["must be a number >= 0 and < 1, not 1.5"]),
    "--set train.amp=maybe": Case([*TRAIN, "--set", "train.amp=maybe"],
                                  ["train.amp must be true or false, not 'maybe'"]),
    "--set train.label_smoothing=1": Case([*TRAIN, "--set", "train.label_smoothing=1"], ["< 1"]),
    "--set data.loader=disk": Case([*TRAIN, "--set", "data.loader=disk"], ["must be one of memory, ffcv"]),
    "--set data.name=svhn": Case([*TRAIN, "--set", "data.name=svhn"], ["unknown data set 'svhn'", "cifar10"]),
    "--set model.arch=resnet": Case([*TRAIN, "--set", "model.arch=resnet"], ["did you mean 'resnet18'"]),
    "--set model.width=0": Case([*TRAIN, "--set", "model.width=0"], ["model.width must be an integer >= 1, not 0"]),
    "--set train.device=cuda without CUDA": Case([*TRAIN, "--set", "train.device={cuda}"],
                                                 ["train.device = 'cuda", "CUDA", "auto"]),
    "--set train.device=gpu": Case([*TRAIN, "--set", "train.device=gpu"], ["is not a device", "auto, cpu"]),
    "--set without =": Case([*TRAIN, "--set", "train.epochs"], ["must look like section.key=value"]),
    "--set without a section": Case([*TRAIN, "--set", "epochs=3"], ["must name a section and a key"]),
    "--set into a value": Case([*TRAIN, "--set", "train.epochs.max=3"], ["train.epochs is a value, not a section"]),
    "--set unknown method table": Case([*TRAIN, "--set", "unlearn.rwft0.epochs=1"],
                                       ["[unlearn.rwft0]", "did you mean 'rwft-o'"]),
    "--set method hyperparameter out of range": Case([*TRAIN, "--set", "unlearn.rwft-o.epochs=0"],
                                                     ["rwft-o hyperparameter epochs must be an integer >= 1, not 0"]),
    "--config that does not exist": Case(["train", "--config", "digit", "--out", "{out}"],
                                         ["no config 'digit'", "did you mean 'digits'"]),
    "--config that is not TOML": Case(["train", "--config", "{case}/bad.toml", "--out", "{out}"],
                                      ["is not valid TOML", "fix the file"], write_file("bad.toml", "[train\nx=1")),
    "--config with an unknown section": Case(
        ["train", "--config", "{case}/odd.toml", "--out", "{out}"], ["unknown config section 'traning'", "odd.toml"],
        write_file("odd.toml", "[traning]\nepochs = 3\n")),
    "train --seed -1": Case([*TRAIN, "--seed", "-1"], ["train.seed must be an integer >= 0, not -1 (from --seed)"]),
    "train --bogus": Case([*TRAIN, "--bogus"], ["No such option: --bogus", "fastforget train --help"]),
    "train without --out": Case(["train", *TINY], ["Missing option '--out'"]),

    # -- method hyperparameters (unlearn): checked before any work
    "--hp epochs=0": Case([*UNLEARN, "--hp", "epochs=0"],
                          ["rwft-2-o hyperparameter epochs must be an integer >= 1, not 0"]),
    "--hp epochs=-5": Case([*UNLEARN, "--hp", "epochs=-5"], ["epochs must be an integer >= 1, not -5"]),
    "ssd --hp alpha=nan": Case([*UNLEARN[:2], "ssd", *UNLEARN[3:], "--hp", "alpha=nan"],
                               ["ssd hyperparameter alpha must be a finite number >= 0, not nan"]),
    "--hp lr=-1": Case([*UNLEARN, "--hp", "lr=-1"], ["lr must be a number > 0, not -1.0"]),
    "--hp lr=abc": Case([*UNLEARN, "--hp", "lr=abc"], ["lr must be a number > 0, not 'abc'"]),
    "--hp batch_size=0": Case([*UNLEARN, "--hp", "batch_size=0"], ["batch_size must be an integer >= 1, not 0"]),
    "--hp epoch=3": Case([*UNLEARN, "--hp", "epoch=3"], ["no hyperparameter 'epoch'", "did you mean 'epochs'"]),
    "--hp reassign=bogus": Case([*UNLEARN, "--hp", "reassign=bogus"], ["must be one of proportional, max-class"]),
    "--hp retain_fraction=1": Case([*UNLEARN, "--hp", "retain_fraction=1"],
                                   ["retain_fraction must be a number >= 0 and < 1, not 1.0"]),
    "--hp freeze_bn=maybe": Case([*UNLEARN, "--hp", "freeze_bn=maybe"], ["true or false"]),
    "--hp blocks names no block": Case([*UNLEARN, "--hp", 'blocks=["layer9"]'],
                                       ["no block 'layer9'", "its blocks: conv1, block1, block2, pool, fc"]),
    "salun --hp ratio=0": Case([*UNLEARN[:2], "salun", *UNLEARN[3:], "--hp", "ratio=0"],
                               ["ratio must be a number > 0 and <= 1, not 0.0"]),
    "--hp without =": Case([*UNLEARN, "--hp", "epochs"], ["--hp 'epochs' must look like key=value"]),
    "unlearn --seed -1": Case([*UNLEARN, "--seed", "-1"], ["train.seed must be an integer >= 0, not -1 (from --seed)"]),
    "unknown method": Case([*UNLEARN[:2], "no-such-method", *UNLEARN[3:]],
                           ["unknown method 'no-such-method'", "unlearn --list"]),
    "unlearn without --method and --out": Case(["unlearn", "--checkpoint", "{original}"],
                                               ["unlearn needs --method, --out"]),
    "unlearn with a config of another data set": Case([*UNLEARN, "--config", "mnist-resnet18"],
                                                      ["'mnist'", "'digits'", "leave --config out"]),
    "unlearn on a device that is absent": Case([*UNLEARN, "--set", "train.device={cuda}"], ["CUDA"]),

    # -- classes
    "unknown class": Case([*UNLEARN[:-4], "--forget", "eleven", "--out", "{out}"],
                          ["unknown class 'eleven'", "Valid classes (name or index)"]),
    "class index out of range": Case([*UNLEARN[:-4], "--forget", "10", "--out", "{out}"],
                                     ["class index 10 is out of range", "10 classes"]),
    "forget every class": Case([*UNLEARN[:-4], "--forget", *DIGITS, "--out", "{out}"], ["every class"]),
    "exclude every class": Case([*TRAIN, "--exclude", *DIGITS], ["cannot exclude every class"]),
    "exclude an unknown class": Case([*TRAIN, "--exclude", "-1"], ["unknown class '-1'"]),
    "unlearn an original without --forget": Case(["unlearn", "--method", "rw-mask", "--checkpoint", "{original}",
                                                  "--out", "{out}"], ["--forget CLASS"]),
    "eval an original without --forget": Case(["eval", "--checkpoint", "{original}"],
                                              ["records no forget classes", "--forget"]),

    # -- metric options (eval)
    "--nearest is the forget class": Case([*EVAL, "--nearest", "3"], ["--nearest 3 is a forget class"]),
    "--shadows 0": Case([*EVAL, "--metrics", "ulira", "--shadows", "0"],
                        ["'--shadows'", "greater than or equal to 1", "fastforget eval --help"]),
    "--reference-models 0": Case([*EVAL, "--metrics", "rmia", "--reference-models", "0"],
                                 ["'--reference-models'", "greater than or equal to 1"]),
    "--train-samples -5": Case([*EVAL, "--train-samples", "-5"], ["'--train-samples'", "greater than or equal to 0"]),
    "--metrics unknown": Case([*EVAL, "--metrics", "accuracy,bogus"], ["unknown metric 'bogus'", "choose from"]),
    "the same --retrained twice": Case([*EVAL, "--retrained", "{retrained}", "--retrained", "{retrained}"],
                                       ["are the same model", "--seed N"]),
    "a copy of one --retrained as another": Case([*EVAL, "--retrained", "{retrained}", "--retrained", "{case}/ckpt"],
                                                 ["identical weights"], copy_of("retrained")),
    "--retrained that kept the forget class": Case([*EVAL, "--retrained", "{original}"],
                                                   ["retrain without exactly the forget classes"]),

    # -- corrupt or edited checkpoints
    "sidecar names an unknown arch": Case(EVAL_CKPT, ["unknown arch 'transformer'", "restore the sidecar"],
                                          sidecar_edit(lambda meta: meta.update(arch="transformer"))),
    "sidecar is a JSON list": Case(EVAL_CKPT, ["holds a JSON list, not an object"], sidecar_edit(lambda meta: [meta])),
    "sidecar holds non-UTF-8 bytes": Case(EVAL_CKPT, ["is not UTF-8 text"],
                                          sidecar_edit(lambda meta: b'{"arch": "\xff\xfe"}')),
    "sidecar is not JSON": Case(EVAL_CKPT, ["is not valid JSON"], sidecar_edit(lambda meta: b"{broken")),
    "sidecar classes: 10": Case(EVAL_CKPT, ["classes must be the list of class names"],
                                sidecar_edit(lambda meta: meta.update(classes=10))),
    "sidecar with an unknown arch_args key": Case(
        EVAL_CKPT, ["arch_args has unknown key(s) ['depth']", "cnn takes in_channels, width"],
        sidecar_edit(lambda meta: meta["arch_args"].update(depth=3))),
    "sidecar with a negative width": Case(EVAL_CKPT, ["arch_args values must be positive integers"],
                                          sidecar_edit(lambda meta: meta["arch_args"].update(width=-3))),
    "sidecar lacks arch": Case(EVAL_CKPT, ["lacks the field 'arch'"],
                               sidecar_edit(lambda meta: meta.pop("arch") and None)),
    "sidecar with excluded names": Case(EVAL_CKPT, ["excluded must be a list of class indices"],
                                        sidecar_edit(lambda meta: meta.update(excluded=["three"]))),
    "sidecar with an unknown wrapper": Case(EVAL_CKPT, ["cannot build", "unknown model wrapper 'bogus'"],
                                            sidecar_edit(lambda meta: meta.update(wrappers=[{"type": "bogus"}]))),
    "sidecar with an edited arch": Case(EVAL_CKPT, ["does not fit this VGG19BN"],
                                        sidecar_edit(lambda meta: meta.update(arch="vgg19_bn"))),
    "sidecar with a class fewer": Case(EVAL_CKPT, ["does not fit", "class count"],
                                       sidecar_edit(lambda meta: meta.update(classes=DIGITS[:9]))),
    "sidecar whose recorded config is wrong": Case(
        EVAL_CKPT, ["train.epochs must be an integer >= 1, not -1 (from the checkpoint sidecar's config)"],
        sidecar_edit(lambda meta: meta["config"]["train"].update(epochs=-1))),
    "sidecar edited to dataset mnist": Case(EVAL_CKPT, ["trained on other data than 'mnist'", "sidecar was edited"],
                                            sidecar_edit(lambda meta: meta.update(dataset="mnist")), needs="mnist"),
    "old sidecar edited to dataset mnist": Case(
        EVAL_CKPT, ["trained on other data than 'mnist'"],
        sidecar_edit(lambda meta: meta.update(dataset="mnist"), keep_hash=False), needs="mnist"),
    "sidecar edited to an unknown data set": Case(EVAL_CKPT, ["unknown data set 'svhn'"],
                                                  sidecar_edit(lambda meta: meta.update(dataset="svhn"))),
    "sidecar missing": Case(EVAL_CKPT, ["has no sidecar model.json", "fastforget train"],
                            lambda case, m: (copy_of("original")(case, m), (case / "ckpt" / "model.json").unlink())),
    "weights missing": Case(EVAL_CKPT, ["no checkpoint at", "fastforget train --out"],
                            lambda case, m: (copy_of("original")(case, m),
                                             (case / "ckpt" / "model.safetensors").unlink())),
    "weights corrupt": Case(EVAL_CKPT, ["not the file its sidecar", "written apart"],
                            lambda case, m: (copy_of("original")(case, m),
                                             (case / "ckpt" / "model.safetensors").write_bytes(b"garbage"))),
    "weights of another model beside the sidecar": Case(
        EVAL_CKPT, ["not the file its sidecar"],
        lambda case, m: (copy_of("original")(case, m), shutil.copy(m.retrained / "model.safetensors",
                                                                   case / "ckpt" / "model.safetensors"))),
    "checkpoint folder empty": Case(["eval", "--checkpoint", "{case}"], ["no checkpoint at"]),
    "checkpoint missing": Case(["eval", "--checkpoint", "{case}/absent"], ["no checkpoint at", "absent"]),

    # -- data folders
    "a malicious CIFAR pickle": Case(["data", "prepare", "cifar100", "--root", "{case}/evil", "--out", "{out}"],
                                     ["refusing to load", "system", "download it again"], malicious_cifar100),
    "a CIFAR-10 zip that is not a zip": Case(["data", "prepare", "cifar10", "--root", "{case}", "--out", "{out}"],
                                             ["is not a readable zip archive"], write_file("cifar10-jpeg.zip")),
    "a data set that is not there": Case(["data", "prepare", "mnist", "--root", "{case}", "--out", "{out}"],
                                         ["not found", "to get it", "FASTFORGET_DATA"]),
    "an unknown data set": Case(["data", "prepare", "svhn", "--out", "{out}"], ["unknown data set 'svhn'"]),
}


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fill(arg: str, m: SimpleNamespace, case: Path) -> str:
    readonly = (case / "readonly_path").read_text() if (case / "readonly_path").is_file() else ""
    import torch

    return arg.format(original=m.original, retrained=m.retrained, unlearned=m.unlearned, out=case / "out", case=case,
                      readonly=readonly, cuda="cuda:99" if torch.cuda.is_available() else "cuda")


def test_the_battery_has_the_issues_85_cases():
    assert len(CASES) >= 85


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_writes_nothing(models, tmp_path, monkeypatch, name):
    case = CASES[name]
    if case.needs == "mnist":
        from conftest import shared_data_root

        if shared_data_root() is None:
            pytest.skip("MNIST not found: set FASTFORGET_DATA to the shared data folder")
    monkeypatch.setenv("FASTFORGET_CACHE", str(models.cache))
    release = case.prepare(tmp_path, models) if case.prepare else None
    before = {**_files(models.root), **{f"case/{k}": v for k, v in _files(tmp_path).items()}}
    try:
        run = fastforget(*[_fill(arg, models, tmp_path) for arg in case.args])
        after = {**_files(models.root), **{f"case/{k}": v for k, v in _files(tmp_path).items()}}
    finally:
        if callable(release):
            release()
    assert run.code == 2, (run.code, run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err + run.out
    for fragment in case.says:
        assert fragment in lines[0], (fragment, lines[0])
    assert after == before, "a failed command changed files"
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


# --- what the refusals protect: asked for, the same commands work -------------------------------------------------

def test_overwrite_replaces_a_model_only_when_asked(models, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(models.original, out)
    before = (out / "model.json").read_text()
    assert fastforget("train", *TINY, "--seed", "5", "--out", out).code == 2
    assert (out / "model.json").read_text() == before
    run = fastforget("train", *TINY, "--seed", "5", "--out", out, "--overwrite")
    assert run.code == 0, run.err
    assert json.loads((out / "model.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left behind


def test_unlearning_never_touches_its_input(models, tmp_path):
    before = _files(models.original)
    run = fastforget("unlearn", "--method", "rw-mask", "--checkpoint", models.original, "--forget", "3", "--out",
                     tmp_path / "u")
    assert run.code == 0, run.err
    assert _files(models.original) == before
    meta = json.loads((tmp_path / "u" / "model.json").read_text())
    assert meta["original_checkpoint"] == str(models.original) and meta["data_fingerprint"]["train_size"] == 1257


def test_bench_results_carry_the_config_hash_and_another_config_moves_them_aside(models, tmp_path, monkeypatch):
    from fastforget.bench import read_results

    monkeypatch.setenv("FASTFORGET_CACHE", str(models.cache))
    grid = tmp_path / "grid"
    shutil.copytree(models.grid, grid)
    records = read_results(grid / "results.jsonl")
    config = json.loads((grid / "config.json").read_text())
    assert {r["config_hash"] for r in records} == {config["config_hash"]}
    assert config["data_fingerprint"]["train_size"] == 1257
    # extending the grid (another method) keeps the hash and reuses the models and cells
    run = fastforget("bench", *GRID[:3], "original,rw-mask,rwft-2-o", *GRID[4:], "--set", "unlearn.rwft-2-o.epochs=1",
                     "--out", grid)
    assert run.code == 2 and "belongs to another config" in run.err  # an unlearn.* change is another config
    run = fastforget("bench", *GRID[:3], "original,rw-mask,retrain", *GRID[4:], "--out", grid)
    assert run.code == 0, run.err
    assert [r["method"] for r in read_results(grid / "results.jsonl")] == ["original", "rw-mask", "retrain"]
    # --overwrite with another config moves the old results aside, nothing deleted
    run = fastforget("bench", *GRID, "--set", "train.lr=0.01", "--out", grid, "--overwrite")
    assert run.code == 0, run.err
    aside = next(grid.glob("superseded-*"))
    assert aside.name == f"superseded-{config['config_hash']}"
    assert [r["method"] for r in read_results(aside / "results.jsonl")] == ["original", "rw-mask", "retrain"]
    assert sorted(p.name for p in (aside / "models").iterdir()) == ["original-s0", "retrained-3-s0"]
    fresh = read_results(grid / "results.jsonl")
    assert [r["method"] for r in fresh] == ["original", "rw-mask"]
    assert {r["config_hash"] for r in fresh} == {json.loads((grid / "config.json").read_text())["config_hash"]}
    assert fresh[0]["config_hash"] != config["config_hash"]


def test_a_folder_from_before_config_hashes_resumes(models, tmp_path, monkeypatch):
    import fastforget.bench as bench_module

    monkeypatch.setenv("FASTFORGET_CACHE", str(models.cache))
    grid = tmp_path / "grid"
    shutil.copytree(models.grid, grid)
    config = json.loads((grid / "config.json").read_text())
    for key in ("config_hash", "data_fingerprint"):
        config.pop(key)
    (grid / "config.json").write_text(json.dumps(config))
    lines = [json.loads(line) for line in (grid / "results.jsonl").read_text().splitlines()]
    (grid / "results.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "config_hash"}) + "\n"
                                                for r in lines))
    monkeypatch.setattr(bench_module, "run_method", lambda *a, **k: pytest.fail("a finished cell ran again"))
    run = fastforget("bench", *GRID, "--out", grid)
    assert run.code == 0, run.err
    assert json.loads((grid / "config.json").read_text())["config_hash"] == lines[0]["config_hash"]


def test_duplicate_result_lines_count_once(models, tmp_path):
    """Lines written twice (by two runs before the lock existed) are one cell each in every table."""
    from fastforget.bench import read_results, write_report

    grid = tmp_path / "grid"
    shutil.copytree(models.grid, grid)
    lines = (grid / "results.jsonl").read_text()
    (grid / "results.jsonl").write_text(lines + lines)
    assert [r["method"] for r in read_results(grid / "results.jsonl")] == ["original", "rw-mask"]
    write_report(grid, DIGITS, json.loads((grid / "config.json").read_text())["bench"])
    table = (grid / "table2_accuracy_mia.md").read_text()
    assert "±" not in table  # one cell per method: no spread of a cell against its own copy


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    import subprocess

    from fastforget.errors import ResultsLockedError
    from fastforget.io import exclusive_lock

    results = tmp_path / "results.jsonl"
    Path(f"{results}.lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": 0, "command": "old"}))
    with exclusive_lock(results):  # a lock file left by a killed run holds no lock: taken over
        with pytest.raises(ResultsLockedError, match="another fastforget run"), exclusive_lock(results):
            pass
    assert not Path(f"{results}.lock").exists()
    # a live holder in another process
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom fastforget.io import exclusive_lock\n"
         f"with exclusive_lock({str(results)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsLockedError, match=f"pid {holder.pid}"), exclusive_lock(results):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(results):  # the kernel released the killed holder's lock
        pass
