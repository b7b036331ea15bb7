"""What the steps of bench/gpu.sh share: arguments, dry-run set-up, GPU timers and the result files.

A step is a script `bench/gpu/NN_name.py` (run in NN order; a `# budget: S` line gives its seconds):

    from common import Step
    step = Step(__doc__)          # parses --out/--dry-run/--budget-s; a dry run selects the interpreter, first
    import torch                  # only then torch, triton, kernels
    ...
    step.record("Table title", {"column": value, ...})
    sys.exit(step.finish())       # writes OUT/steps/NN_name.json (report.py merges them); 1 if step.fail()ed

--dry-run (and any run without CUDA) walks the same code on the CPU with tiny shapes, Triton interpreted, so that
CI keeps every step working (tests/test_gpu_script.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


class Step:
    def __init__(self, doc: str | None) -> None:
        self.name = Path(sys.argv[0]).stem
        parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/fastforget-gpu"),
                            help="results folder (default: $OUT, else /tmp/fastforget-gpu)")
        parser.add_argument("--dry-run", action="store_true", help="CPU walk-through with tiny shapes")
        parser.add_argument("--budget-s", type=float, default=120.0, help="stop starting new work after this")
        parser.add_argument("--data", type=Path, default=None, help="data folder ($FASTFORGET_DATA otherwise)")
        self.args = parser.parse_args()
        self.started = time.monotonic()
        self.deadline = self.started + self.args.budget_s
        self.cuda = False
        if self.args.dry_run or not cuda_present():
            os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported: the kernels run interpreted
            self.args.dry_run = True
        import torch

        self.cuda = torch.cuda.is_available() and not self.args.dry_run
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dry_run = self.args.dry_run
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.notes: list[str] = []
        self.failures: list[str] = []
        if self.dry_run:
            self.note("DRY RUN on the CPU (tiny shapes, Triton interpreted): the numbers only show that the step works")

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def out_of_time(self, what: str) -> bool:
        if self.left_s() > 0:
            return False
        self.note(f"budget spent: skipped {what}")
        return True

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.notes.append(text)

    def fail(self, reason: str) -> None:
        """A check the step makes did not hold: recorded, and the step exits non-zero."""
        self.note(f"FAILED: {reason}")
        self.failures.append(reason)

    def record(self, table: str, row: dict[str, Any]) -> None:
        print("  " + "  ".join(f"{k}={format_value(v)}" for k, v in row.items()), flush=True)
        self.tables.setdefault(table, []).append(row)

    def run_api(self, main: Callable[[], None]) -> int:
        """Runs `main`, turning a moved fastforget API (import, signature, attribute) into this step's failure
        instead of a traceback, then `finish`es."""
        try:
            main()
        except (ImportError, TypeError, AttributeError) as error:
            self.fail(f"the fastforget API this step uses changed ({type(error).__name__}: {error}); update "
                      f"bench/gpu/{self.name}.py")
        return self.finish()

    def finish(self) -> int:
        """Writes OUT/steps/NAME.json; returns the exit status (1 when a check failed)."""
        folder = self.args.out / "steps"
        folder.mkdir(parents=True, exist_ok=True)
        result = {"step": self.name, "dry_run": self.dry_run, "seconds": time.monotonic() - self.started,
                  "device": device_name(self.device), "notes": self.notes, "failures": self.failures,
                  "tables": self.tables}
        temporary = folder / f"{self.name}.json.tmp"
        temporary.write_text(json.dumps(result, indent=1, default=str))
        temporary.replace(folder / f"{self.name}.json")  # nothing half-written survives a kill
        return 1 if self.failures else 0


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def recorded_device(out: Path) -> dict[str, Any]:
    """Step 10's record of the card (its datasheet and measured bf16 peaks) when it ran into `out`, else {}."""
    record = out / "steps" / "10_environment.json"
    return json.loads(record.read_text())["tables"]["Device"][0] if record.is_file() else {}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def median_ms(fn: Callable[[], object], cuda: bool, rounds: int = 2) -> float:
    """Median milliseconds per call: triton.testing.do_bench on a GPU (CUDA events over many launches, L2
    flushed between them, no synchronisation inside the timed function); a few wall-clock calls on the CPU."""
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    import statistics

    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def copy_floor_ms(nbytes: int, device: Any, cuda: bool) -> float:
    """The time a device-to-device copy takes to move `nbytes` (half read, half written)."""
    import torch

    src = torch.empty(max(nbytes // 2, 1), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return median_ms(lambda: dst.copy_(src), cuda)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic_cifar(train: int, test: int):
    """CIFAR-shaped uint8 images with balanced labels (the data set does not travel to the GPU machine; the
    timings do not depend on pixel values)."""
    import torch

    from fastforget.data import ImageDataset

    gen = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)  # noqa: E731
    labels = lambda n: torch.arange(n) % len(CIFAR_CLASSES)  # noqa: E731
    return ImageDataset("cifar10", images(train), labels(train), images(test), labels(test), list(CIFAR_CLASSES),
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
