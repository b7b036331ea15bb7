"""What the benchmarks under bench/ share: the package on the path, quiet progress bars, data that skips when
absent, an optional CPU thread count, and markdown tables printed at the end of the run.

Unlike tests/conftest.py this does not set TRITON_INTERPRET: benchmarks time the real code paths, never
Triton's CPU interpreter.

$FASTFORGET_BENCH_THREADS sets torch's CPU threads for the whole run: on a machine shared with other jobs,
OpenMP threads that wait for a busy core can make small models ten times slower, so one thread gives
steadier numbers there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # a plain checkout (no `pip install -e .`) imports fastforget and fastforget_kernels
    sys.path.insert(0, str(REPO))
os.environ.setdefault("FASTFORGET_PROGRESS", "0")

import torch  # noqa: E402

from fastforget.data import ImageDataset, load_dataset  # noqa: E402
from fastforget.errors import DataNotFoundError  # noqa: E402

if os.environ.get("FASTFORGET_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["FASTFORGET_BENCH_THREADS"]))


def _load_or_skip(name: str) -> ImageDataset:
    try:
        return load_dataset(name)
    except DataNotFoundError as err:
        pytest.skip(f"data set {name!r} not found (set FASTFORGET_DATA to the shared data folder): {err}")


@pytest.fixture(scope="session")
def load_or_skip() -> Callable[[str], ImageDataset]:
    """Loads a data set from the default data root ($FASTFORGET_DATA), or skips saying what is missing."""
    return _load_or_skip


Tables = dict[str, list[dict[str, object]]]
"""Markdown tables by title, each a list of rows (column -> value)."""

TABLES_KEY = pytest.StashKey[Tables]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TABLES_KEY] = {}


@pytest.fixture(scope="session")
def bench_tables(request: pytest.FixtureRequest) -> Tables:
    """Rows that benchmarks add to tables printed after the run, so that side-by-side numbers (ratios against a
    baseline measured in the same run) can be read and pasted as they are."""
    return request.config.stash[TABLES_KEY]


def markdown(tables: Tables) -> str:
    parts = []
    for title, rows in tables.items():
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 0.995 else f"{value:.3g}"
    return str(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tables = config.stash.get(TABLES_KEY, None)
    if tables:
        terminalreporter.write_sep("=", "benchmark summary (markdown)")
        terminalreporter.write_line(markdown(tables))
