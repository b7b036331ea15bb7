"""Where the benchmark's tasks run: `local` (this process, one task after another) or `ray` (Ray Core tasks on a
local or remote cluster).

The benchmark hands an engine a graph of `Task`s: training tasks (each writes one model folder and returns its
path) and cell tasks (each loads the models it needs and returns one result dict). A task names the tasks it
needs; the engine passes their results (model folders) as the task's trailing arguments, so that on Ray the
dependencies are top-level task arguments, the only ones Ray resolves. The engine reports each finished task to
`on_done` and each failed one to `on_failed` in the driver process, which alone writes the results files.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

ENGINES = ("local", "ray")
DEFAULT_GPUS_PER_CELL = 0.25
"""Four cells per GPU. A CIFAR-10 ResNet-18 RWFT-2-O cell trains layer3 + fc on 5,000 images in batches of 128
(about 400 small steps, launch-bound on an H100/H200) and holds a few GiB; a quarter of the card caps its memory
far above that. Chosen by this reasoning, not yet by measurement: bench/gpu.sh step 60 measures 1, 2, 4 and 8
concurrent cells on one GPU to confirm or replace it."""
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(*args, *results of needs)`, a module-level function (pickled by reference)."""

    key: str                        # "train:original-s0", "cell:rwft-2-o|3|s0"
    fn: Callable[..., Any]
    args: tuple = ()
    needs: tuple[str, ...] = ()     # keys of the tasks whose results this one takes
    product: str | None = None      # the folder a training task writes (known before it runs)
    gpu: bool = True                # uses the accelerator when there is one (cells and trainings do)
    cell: bool = False              # a cell (shares a GPU by --gpus-per-cell) rather than a training


@dataclass
class Failure:
    """A task that did not finish: `kind` is error (deterministic, not retried), crash (the worker or its node
    died, retried `max_retries` times) or dependency (a task it needs failed)."""

    key: str
    kind: str
    error: str
    message: str
    traceback: str = ""
    attempts: int = 1
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"task": self.key, "kind": self.kind, "error": self.error, "message": self.message,
                "attempts": self.attempts, "traceback": self.traceback, **self.extra, "time": time.time()}


def failure_from(key: str, err: BaseException, kind: str = "error") -> Failure:
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    return Failure(key=key, kind=kind, error=type(err).__name__, message=str(err).strip().splitlines()[0]
                   if str(err).strip() else type(err).__name__, traceback="".join(lines[-6:]))


class Engine(Protocol):
    name: str

    def run(self, tasks: Sequence[Task], on_done: Callable[[Task, Any], None],
            on_failed: Callable[[Task, Failure], None]) -> None: ...


def execution_record(engine: str, gpu_share: float | None, started: float) -> dict:
    """Where and when a task ran: stored in its result line, read by the runtime table (shared devices)."""
    return {"engine": engine, "node": socket.gethostname(), "pid": os.getpid(), "gpu_share": gpu_share,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": started,
            "finished": time.time()}


def make_engine(name: str = "local", *, address: str | None = None,
                gpus_per_cell: float = DEFAULT_GPUS_PER_CELL, max_retries: int = DEFAULT_MAX_RETRIES) -> Engine:
    """The engine called `name`, with its options checked (a clear error for a bad one)."""
    from fastforget.errors import ConfigError

    if name not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, not {name!r}")
    if not 0 < gpus_per_cell <= 1 and not (gpus_per_cell >= 1 and float(gpus_per_cell).is_integer()):
        raise ConfigError(f"--gpus-per-cell must be a fraction in (0, 1] or a whole number of GPUs, not "
                          f"{gpus_per_cell}")
    if max_retries < 0:
        raise ConfigError(f"--max-retries must be >= 0, not {max_retries}")
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --engine ray (the local engine runs in this process)")
        from fastforget.engines.local import LocalEngine

        return LocalEngine()
    from fastforget.engines.ray_engine import RayEngine

    return RayEngine(address=address, gpus_per_cell=gpus_per_cell, max_retries=max_retries)
