"""The local engine: every task in this process, in the order given (dependencies first), as the grid always ran.

A task that raises is recorded as failed and the rest of the grid goes on; the tasks that need it fail as
dependencies. An interrupt (Ctrl-C) stops the grid: what finished is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from fastforget.engines import Failure, Task, execution_record, failure_from


class LocalEngine:
    name = "local"

    def run(self, tasks: Sequence[Task], on_done: Callable[[Task, Any], None],
            on_failed: Callable[[Task, Failure], None]) -> None:
        results: dict[str, Any] = {}
        failed: set[str] = set()
        for task in tasks:
            missing = [n for n in task.needs if n in failed]
            if missing:
                failed.add(task.key)
                on_failed(task, Failure(task.key, "dependency", "DependencyFailed",
                                        f"needs {missing[0]}, which failed"))
                continue
            started = time.time()
            try:
                value = task.fn(*task.args, *(results[n] for n in task.needs))
            except Exception as err:  # a cell's own error: recorded, the grid goes on
                failed.add(task.key)
                on_failed(task, failure_from(task.key, err))
                continue
            if isinstance(value, dict):
                value["execution"] = execution_record(self.name, None, started)
            results[task.key] = value
            on_done(task, value)

