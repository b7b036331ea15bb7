"""The training loop against a plain hand-written PyTorch loop: ATen ops per step and steps per second.

    python bench/loop.py [--before DIR] [--rounds 5] [--reps 3] [--cases NAME,...] [--impls NAME,...]
                         [--skip-compiled] [--out FILE.json]

Cases (real data from $FASTFORGET_DATA; models freshly initialised with a fixed seed, since a step's cost does
not depend on the weights' values):
  digits-rwft-2-o   RWFT-2-O on scikit-learn digits with the digits config's hyperparameters (small CNN width 32,
                    forget 3, batch 16, 20 epochs: 160 steps), no augmentation: the overhead-bound setting
  cifar-rwft-2-o    RWFT-2-O on the first 10,000 CIFAR-10 training images (ResNet-18 width 16, forget automobile,
                    crop-4 + flip, so the teacher runs every step; batch 128, one epoch: 8 steps)
  cifar-epoch       fit() with cross-entropy on CIFAR-10 (ResNet-18 width 16, batch 256, crop-4 + flip), 5 batches
Implementations, each in its own process, run in turn round after round (interleaved, so that load on a shared
machine hits all of them alike):
  plain             the loop anyone would write: teacher forward (RWFT), student forward, the loss, zero_grad,
                    backward, torch.optim.SGD (momentum 0.9, weight decay 5e-4) on the same parameters, bf16
                    autocast, channels-last, the same InMemoryLoader batches
  after             fastforget from this checkout (`run_method` for RWFT-2-O, `fit` for the epoch)
  after+compile     the same with train.compile=true (torch.compile; its compile time is reported apart)
  before            fastforget from the tree given by --before (e.g. `git archive BASE | tar -x -C DIR`)
Each process first runs its case once untimed (one-time costs: imports, oneDNN kernels, compilation), then times
--reps runs; a round's number is the median of its reps, the table gives the median over rounds and the spread
(min..max), and the same for the process's CPU time (one torch thread: on a loaded machine CPU time is what
waiting for a core does not inflate). `ops` counts ATen operators per training step with torch.profiler: run the
case with one and two epochs and divide the difference by the extra steps, so set-up work cancels.
"top_level": ATen operators dispatched from Python or the autograd engine, views included (what the issue
counted); "kernels": the leaf operators that compute (no views, allocations or no-op casts) plus Inductor's fused
C++ kernels, i.e. what would each be a kernel launch on a GPU (`bench/gpu/60_loop.py` counts real launches there).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ("digits-rwft-2-o", "cifar-rwft-2-o", "cifar-epoch")
IMPLEMENTATIONS = ("plain", "after", "after+compile", "before")
EPOCH_BATCHES = 5
TIME_SAMPLES = 10000  # CIFAR-10 training images the timed cases keep (cifar-rwft-2-o: ~1,000 automobiles, 8 steps)
OPS_BATCH = 8  # counting operators (their number does not depend on the batch size): batches of 8,
OPS_BATCHES = 4  # 4 of them per epoch of cifar-epoch,
OPS_SAMPLES = 400  # and the first 400 CIFAR-10 training images for cifar-rwft-2-o (5 steps per epoch)


# ----------------------------------------------------------------------------------------------------- the child

def _fit(model, loader, loss_fn, *, epochs: int, lr: float, momentum: float, weight_decay: float, amp: bool,
         compile: bool):
    """fastforget's fit() from whichever tree is imported: the grouped specs of this checkout, or the flat
    keywords of the commits before them (how the `before` column is measured)."""
    import fastforget.train as train

    if hasattr(train, "SGDSpec"):
        return train.fit(model, loader, loss_fn, epochs=epochs,
                         sgd=train.SGDSpec(lr=lr, momentum=momentum, weight_decay=weight_decay),
                         execution=train.ExecSpec(amp=amp, compile=compile), desc="bench")
    return train.fit(model, loader, loss_fn, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                     amp=amp, compile=compile, desc="bench")


class Case:
    """A case's data, model and hyperparameters, and its two runners (fastforget's and the plain loop)."""

    def __init__(self, name: str, *, compile: bool, amp: bool, ops: bool) -> None:
        import torch

        from fastforget.config import load_config
        from fastforget.data import Augment, load_dataset
        from fastforget.models import build_model

        self.name, self.amp, self.batches = name, amp, OPS_BATCHES if ops else EPOCH_BATCHES
        digits = name.startswith("digits")
        overrides = ["model.width=16"] if not digits else []
        self.cfg = load_config("digits" if digits else "cifar10-resnet18-small",
                               [*overrides, f"train.compile={str(compile).lower()}", f"train.amp={str(amp).lower()}",
                                "train.device=cpu"])
        self.dataset = load_dataset(self.cfg.data["name"])
        if not digits:  # a few RWFT steps per epoch suffice to count operators, a few more to time them
            keep = OPS_SAMPLES if ops else TIME_SAMPLES
            self.dataset = dataclasses.replace(self.dataset, train_images=self.dataset.train_images[:keep],
                                               train_labels=self.dataset.train_labels[:keep])
        self.device = torch.device("cpu")
        torch.manual_seed(0)
        self.original = build_model(self.cfg.model["arch"], self.dataset.num_classes, self.dataset.in_channels,
                                    **self.cfg.arch_args).eval()
        self.forget = [3] if digits else [1]
        self.augment = Augment(self.cfg.data.get("crop_padding", 0), self.cfg.data.get("flip", False))
        if name.endswith("rwft-2-o"):
            from fastforget.unlearn import get_method
            from fastforget.unlearn.registry import merge_hyperparameters

            extra = ({} if digits else {"epochs": 1}) | ({"batch_size": OPS_BATCH} if ops else {})
            self.hp = merge_hyperparameters(get_method("rwft-2-o"), self.cfg.method_overrides("rwft-2-o"), extra)
        else:
            self.hp = {"epochs": 1, "batch_size": OPS_BATCH if ops else 256, "lr": self.cfg.train.lr,
                       "momentum": 0.9, "weight_decay": 5e-4}

    def loader(self, indices, batch_size: int, drop_last: bool):
        from fastforget.data import InMemoryLoader

        return InMemoryLoader(self.dataset.train_images, self.dataset.train_labels, batch_size=batch_size,
                              augment=self.augment, mean=self.dataset.mean, std=self.dataset.std,
                              device=self.device, drop_last=drop_last, seed=0, indices=indices)

    def forget_indices(self):
        import torch

        return torch.nonzero(torch.isin(self.dataset.train_labels, torch.tensor(self.forget))).flatten()

    def epoch_indices(self):
        import torch

        return torch.arange(self.batches * self.hp["batch_size"])

    # fastforget ------------------------------------------------------------------------------------------------
    def fastforget(self, epochs: int | None = None) -> tuple[float, int]:
        """Seconds (as fastforget reports them) and steps of one run."""
        import torch
        import torch.nn.functional as F

        if self.name.endswith("rwft-2-o"):
            from fastforget.unlearn import UnlearnContext, run_method

            ctx = UnlearnContext(original=self.original, meta={"label_smoothing": 0.0}, dataset=self.dataset,
                                 forget=self.forget, cfg=self.cfg, device=self.device)
            hp = {"epochs": epochs or self.hp["epochs"], "batch_size": self.hp["batch_size"]}
            result = run_method("rwft-2-o", ctx, hp)
            steps = hp["epochs"] * -(-len(self.forget_indices()) // self.hp["batch_size"])
            return result.wall_seconds, steps
        model = copy.deepcopy(self.original).to(memory_format=torch.channels_last)
        loader = self.loader(self.epoch_indices(), self.hp["batch_size"], drop_last=True)

        def cross_entropy(net, batch, _progress):
            logits = net(batch.images)
            return F.cross_entropy(logits, batch.labels), logits

        start = time.perf_counter()
        stats = _fit(model, loader, cross_entropy, epochs=epochs or 1, lr=self.hp["lr"],
                     momentum=self.hp["momentum"], weight_decay=self.hp["weight_decay"], amp=self.amp,
                     compile=self.cfg.train.compile)
        return time.perf_counter() - start, stats.steps

    # the plain loop ------------------------------------------------------------------------------------------------
    def plain(self, epochs: int | None = None) -> tuple[float, int]:
        import torch
        import torch.nn.functional as F

        import fastforget_kernels as kernels

        start = time.perf_counter()
        student = copy.deepcopy(self.original).to(memory_format=torch.channels_last)
        rwft = self.name.endswith("rwft-2-o")
        if rwft:
            teacher = self.original
            loader = self.loader(self.forget_indices(), self.hp["batch_size"], drop_last=False)
            params = [*student.get_submodule(student.middle_block).parameters(), *student.fc.parameters()]
            for p in student.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            criterion = kernels.ReweightedCrossEntropyLoss(self.forget)
        else:
            loader = self.loader(self.epoch_indices(), self.hp["batch_size"], drop_last=True)
            params = list(student.parameters())
        optimizer = torch.optim.SGD(params, lr=self.hp["lr"], momentum=self.hp["momentum"],
                                    weight_decay=self.hp["weight_decay"])
        student.train()
        if rwft:  # BatchNorm statistics frozen, as RWFT's freeze_bn
            for module in student.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        steps = 0
        for _ in range(epochs or self.hp["epochs"]):
            for images, labels, _ in loader:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
                    if rwft:
                        with torch.no_grad():
                            target = teacher(images)
                        loss = criterion(student(images), target)
                    else:
                        loss = F.cross_entropy(student(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
        return time.perf_counter() - start, steps


NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand", "as_strided",
    "squeeze", "unsqueeze", "slice", "select", "narrow", "split", "split_with_sizes", "unbind", "chunk", "flatten",
    "unflatten", "detach", "detach_", "alias", "lift_fresh", "empty", "empty_strided", "empty_like", "new_empty",
    "new_empty_strided", "resize_", "set_", "result_type", "to", "contiguous", "_nnpack_available", "resolve_conj",
    "resolve_neg", "is_nonzero"))
"""Operators that, called on their own, only make a view, allocate or return their input: no kernel."""


def count_ops(run: Callable[[], tuple[float, int]]) -> tuple[dict[str, int], int]:
    """What `run` executes, from the profiler: ATen operators dispatched at top level (from Python or the
    autograd engine, views included), and kernels: leaf ATen operators that compute (not views, allocations or
    no-op casts) plus Inductor's fused kernels, i.e. what would be a kernel launch each on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, steps = run()
    top = kernels = fused = 0
    for event in prof.events():
        if "cpp_fused" in event.name or event.name.startswith("triton_"):
            fused += 1
            continue
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        top += parent is None
        computes = event.name not in NO_KERNEL
        kernels += computes and not any(child.name.startswith("aten::") for child in event.cpu_children)
    return {"top_level": top, "kernels": kernels + fused, "inductor_kernels": fused}, steps


def augment_ops() -> dict[str, float]:
    """Operators of one crop-4 + flip + normalise of a CIFAR-sized batch of 256 by the loaders' BatchTransform."""
    import torch

    from fastforget.data.loaders import Augment, BatchTransform

    pixels = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8).permute(0, 2, 3, 1)
    transform = BatchTransform(Augment(crop_padding=4, flip=True), (0.5,) * 3, (0.25,) * 3,
                               device=torch.device("cpu"), dtype=torch.float32, seed=0, epoch=0)
    transform(pixels)
    return count_ops(lambda: (transform(pixels), 1))[0]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(args.tree).resolve()))
    os.environ.setdefault("FASTFORGET_PROGRESS", "0")
    import torch

    if args.mode == "augment":
        print("RESULT " + json.dumps({"case": "augment", "impl": args.label, "ops_per_step": augment_ops()}))
        return

    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # name Inductor's fused kernels in the profiler
    torch.set_num_threads(args.threads)
    case = Case(args.case, compile=args.compile, amp=args.amp == "on", ops=args.mode == "ops")
    runner = case.plain if args.impl == "plain" else case.fastforget
    start = time.perf_counter()
    first_reported, first_steps = runner()
    warm_up = time.perf_counter() - start
    out: dict = {"case": args.case, "impl": args.label, "amp": args.amp, "threads": torch.get_num_threads(),
                 "first_run_reported_s": first_reported, "first_run_wall_s": warm_up, "steps": first_steps}
    if args.mode == "ops":
        (one, steps_one), (two, steps_two) = count_ops(lambda: runner(1)), count_ops(lambda: runner(2))
        out["ops_per_step"] = {k: (two[k] - one[k]) / (steps_two - steps_one) for k in one}
    else:
        times, cpu = [], []
        for _ in range(args.reps):
            start_cpu = time.process_time()
            times.append(runner())
            cpu.append(time.process_time() - start_cpu)
        out["seconds"] = [seconds for seconds, _ in times]
        out["cpu_seconds"] = cpu  # the process's CPU time: on a loaded machine, less moved by waiting for a core
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------- the parent

def run_child(case: str, impl: str, tree: str, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "child", "--case", case, "--impl", "plain" if impl == "plain" else "ff",
               "--label", impl, "--tree", tree, "--mode", mode, "--reps", str(args.reps),
               "--threads", str(args.threads), "--amp", args.amp]
    if impl == "after+compile":
        command.append("--compile")
    env = {**os.environ, "PYTHONPATH": tree}
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{case} / {impl} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["load_1min"] = [load_before, os.getloadavg()[0]]
    return result


def per_round_ratio(results: list[dict], case: str, baseline: str, mine: list[dict], key: str) -> str | None:
    """`baseline`'s time over this implementation's, taken within each round (the median of each's reps), then
    "median (min..max)" over the rounds; `key` is "seconds" (wall) or "cpu_seconds"."""
    by_round = {r["round"]: statistics.median(r[key]) for r in results
                if r["case"] == case and r["impl"] == baseline and key in r}
    ratios = [by_round[r["round"]] / statistics.median(r[key]) for r in mine if key in r and r["round"] in by_round]
    return f"{statistics.median(ratios):.3g} ({min(ratios):.3g}..{max(ratios):.3g})" if ratios else None


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for case in CASES:
        plain = [statistics.median(r["seconds"]) for r in results if r["case"] == case and r["impl"] == "plain"]
        for impl in IMPLEMENTATIONS:
            mine = [r for r in results if r["case"] == case and r["impl"] == impl]
            if not mine:
                continue
            per_round = [statistics.median(r["seconds"]) for r in mine]
            median = statistics.median(per_round)
            steps = mine[0]["steps"]
            row = {"case": case, "impl": impl, "median s": median,
                   "min..max s": f"{min(per_round):.3g}..{max(per_round):.3g}", "steps/s": steps / median,
                   "x plain": statistics.median(plain) / median if plain else None,
                   "x plain per round": per_round_ratio(results, case, "plain", mine, "seconds"),
                   "first run, reported s": statistics.median(r["first_run_reported_s"] for r in mine),
                   "first run, wall s": statistics.median(r["first_run_wall_s"] for r in mine)}
            cpu = [statistics.median(r["cpu_seconds"]) for r in mine if "cpu_seconds" in r]
            if cpu:
                row |= {"median CPU s": statistics.median(cpu),
                        "x plain, CPU time": per_round_ratio(results, case, "plain", mine, "cpu_seconds")}
            if impl == "after+compile":  # what compiling gains over the same code eager
                row |= {"x eager per round": per_round_ratio(results, case, "after", mine, "seconds"),
                        "x eager, CPU time": per_round_ratio(results, case, "after", mine, "cpu_seconds")}
            rows.append(row)
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "n/a" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def parent(args: argparse.Namespace) -> None:
    cases = [c for c in args.cases.split(",") if c]
    wanted = args.impls.split(",") if args.impls else IMPLEMENTATIONS
    impls = [i for i in IMPLEMENTATIONS if i in wanted and (i != "before" or args.before) and
             (i != "after+compile" or not args.skip_compiled)]
    tree = {impl: str(Path(args.before).resolve()) if impl == "before" else str(REPO) for impl in impls}
    report: dict = {"machine": _machine(), "load_1min_start": os.getloadavg()[0], "args": vars(args)}
    ops = []
    if not args.skip_ops:
        for impl in [i for i in ("before", "after") if i in impls]:
            ops.append(run_child("augment", impl, tree[impl], "augment", args))
            print(f"ops augment {impl}: {ops[-1]['ops_per_step']}", flush=True)
        for case in cases:
            for impl in impls:
                if impl == "plain" or args.ops_all or case != "cifar-epoch" or impl != "after+compile":
                    ops.append(run_child(case, impl, tree[impl], "ops", args))
                    print(f"ops {case} {impl}: {ops[-1]['ops_per_step']}", flush=True)
    timed: list[dict] = []
    for round_ in range(args.rounds):
        for case in cases:
            for impl in impls[round_ % len(impls):] + impls[:round_ % len(impls)]:  # rotate who goes first
                timed.append(run_child(case, impl, tree[impl], "time", args) | {"round": round_})
                print(f"round {round_ + 1} {case} {impl}: {timed[-1]['seconds']} load {timed[-1]['load_1min']}",
                      flush=True)
        write_report(report, ops, timed, round_ + 1, args)  # after every round: a killed run keeps what it measured


def write_report(report: dict, ops: list[dict], timed: list[dict], rounds: int, args: argparse.Namespace) -> None:
    rows = summarise(timed)
    report |= {"load_1min_end": os.getloadavg()[0], "rounds_done": rounds, "ops": ops, "timed": timed,
               "summary": rows}
    text = [f"Machine: {report['machine']}; load average (1 min) {report['load_1min_start']:.2f} at the start, "
            f"{report['load_1min_end']:.2f} at the end; {rounds} rounds; torch threads {args.threads}; "
            f"bf16 autocast {args.amp}.", ""]
    if ops:
        text += [markdown([{"case": o["case"], "impl": o["impl"], **o["ops_per_step"]} for o in ops],
                          ["case", "impl", "top_level", "kernels", "inductor_kernels"]), ""]
    text.append(markdown(rows, ["case", "impl", "median s", "min..max s", "steps/s", "x plain", "x plain per round",
                                "median CPU s", "x plain, CPU time", "x eager per round", "x eager, CPU time",
                                "first run, reported s", "first run, wall s"]))
    print("\n".join(text), flush=True)
    if args.out:
        for path, content in ((Path(args.out), json.dumps(report, indent=2)),
                              (Path(args.out).with_suffix(".md"), "\n".join(text) + "\n")):
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(content)
            temporary.replace(path)


def _machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{os.cpu_count()}-core {cpu}, {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode_", nargs="?", default="parent", choices=["parent", "child"])
    parser.add_argument("--before", default="", help="a fastforget tree to measure as `before`")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: steadier)")
    parser.add_argument("--amp", choices=["on", "off"], default="on",
                        help="bf16 autocast (on a CPU without bf16 instructions it is emulated and slow)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--skip-compiled", action="store_true")
    parser.add_argument("--impls", default="", help=f"a subset of {','.join(IMPLEMENTATIONS)} (default: all)")
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--ops-all", action="store_true", help="also profile the compiled ResNet epoch")
    parser.add_argument("--out", default="")
    # the child's own arguments
    parser.add_argument("--case", default="")
    parser.add_argument("--impl", default="ff")
    parser.add_argument("--label", default="")
    parser.add_argument("--tree", default=str(REPO))
    parser.add_argument("--mode", default="time")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    (child if args.mode_ == "child" else parent)(args)


if __name__ == "__main__":
    main()
