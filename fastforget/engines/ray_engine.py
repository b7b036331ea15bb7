"""The Ray engine: each task a Ray Core task, dependencies passed as top-level arguments (object references that
Ray resolves before the task starts), results gathered with `ray.wait` in the driver.

Ray is an optional extra (`pip install 'fastforget[ray]'`), imported only here. Without `address` a local
cluster is started on the loopback only (127.0.0.1, no usage statistics); `auto` or HOST:PORT joins a running
cluster, whose nodes must see the same file system (models travel as folder paths, never through the object
store). Workers are reused between tasks (`max_calls=0`: a fresh worker per GPU task costs seconds), with the
data set cached per worker; a task on a GPU share caps its CUDA memory to that share and empties the CUDA cache
when it ends. A worker or node that dies is retried `max_retries` times; an exception raised by a task is a
deterministic error and is not retried.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastforget.engines import DEFAULT_GPUS_PER_CELL, DEFAULT_MAX_RETRIES, Failure, Task, execution_record
from fastforget.errors import ConfigError, FastForgetError

LOOPBACK = "127.0.0.1"


def import_ray(local: bool):
    """Ray, imported on first use; for a local cluster the loopback settings come first (Ray reads them at import)."""
    if local:
        sandboxed_environment()
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'fastforget[ray]' (or scripts/setup.sh, which "
                          "installs it)") from None
    return ray


def sandboxed_environment() -> None:
    """What a local cluster needs to stay on this machine: no usage statistics, every socket on 127.0.0.1 (Ray
    2.60 binds the external interface unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set as well, before Ray is
    imported)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _run_task(fn: Callable[..., Any], args: tuple, gpu_share: float | None, *needed: Any) -> Any:
    """The body of every Ray task: the task's function with its GPU share enforced, and where it ran."""
    started = time.time()
    import torch

    cuda = bool(gpu_share) and torch.cuda.is_available()
    if cuda and gpu_share < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_share)
    try:
        value = fn(*args, *needed)
    finally:
        if cuda:
            torch.cuda.empty_cache()
    if isinstance(value, dict):
        value["execution"] = execution_record("ray", gpu_share, started)
        value["execution"]["node_ip"] = _node_ip()
    return value


def _node_ip() -> str | None:
    import ray

    try:
        return ray.util.get_node_ip_address()
    except Exception:  # not inside a Ray worker
        return None


class RayEngine:
    name = "ray"

    def __init__(self, *, address: str | None = None, gpus_per_cell: float = DEFAULT_GPUS_PER_CELL,
                 max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        self.ray = import_ray(local=address in (None, "local"))
        self.address, self.gpus_per_cell, self.max_retries = address, gpus_per_cell, max_retries

    def _connect(self) -> bool:
        """Join (or start) the cluster; True when this call started it (and so shuts it down)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        options = dict(configure_logging=False, log_to_driver=True)
        if self.address in (None, "local"):
            ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, **options)
        else:
            ray.init(address=self.address, **options)
        return True

    def _gpus(self, task: Task) -> float:
        if not task.gpu or not self.ray.cluster_resources().get("GPU"):
            return 0
        return self.gpus_per_cell if task.cell else 1

    def run(self, tasks: Sequence[Task], on_done: Callable[[Task, Any], None],
            on_failed: Callable[[Task, Failure], None]) -> None:
        ray = self.ray
        started_here = self._connect()
        try:
            remote = ray.remote(max_calls=0)(_run_task)
            refs: dict[str, Any] = {}
            pending: dict[Any, Task] = {}
            for task in tasks:
                gpus = self._gpus(task)
                ref = remote.options(num_cpus=1, num_gpus=gpus, max_retries=self.max_retries,
                                     retry_exceptions=False, name=task.key).remote(
                    task.fn, task.args, gpus or None, *(refs[n] for n in task.needs))
                refs[task.key] = ref
                pending[ref] = task
            failed: set[str] = set()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    value = ray.get(ready[0])
                except Exception as err:
                    failed.add(task.key)
                    on_failed(task, self._failure(task, err, refs, failed))
                    continue
                on_done(task, value)
        finally:
            if started_here:
                ray.shutdown()

    def _failure(self, task: Task, err: Exception, refs: dict, failed: set[str]) -> Failure:
        """What went wrong, classified: the task's own exception, a needed task's, or a dead worker/node."""
        from fastforget.engines import failure_from

        ray = self.ray
        for need in task.needs:
            if need in failed or _raises(ray, refs[need]):
                return Failure(task.key, "dependency", "DependencyFailed", f"needs {need}, which failed")
        if isinstance(err, ray.exceptions.RayTaskError):
            cause = err.cause if isinstance(err.cause, BaseException) else err
            failure = failure_from(task.key, cause)
            if not isinstance(cause, FastForgetError):
                failure.traceback = str(err)[-2000:]
            return failure
        failure = failure_from(task.key, err, kind="crash")  # worker died, node lost, OOM-killed: retries spent
        failure.attempts = self.max_retries + 1
        return failure


def _raises(ray, ref) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return False
    try:
        ray.get(ref)
    except Exception:
        return True
    return False
