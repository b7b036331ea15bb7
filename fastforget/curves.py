"""Training and unlearning curves in TensorBoard (the optional extra `fastforget[tensorboard]`).

`fit` reports its loss and accuracy at the progress bar's read interval (never more often: no extra host
syncs), as the mean over the steps since the last read, under `DESC/loss` and `DESC/accuracy` (DESC: `train`,
`retrain`, the method's name; a second run of the same name in one log gets `DESC#2`). Nothing is written unless a
log folder is open:

    with curves.tensorboard("runs/tb"):          # or `fastforget unlearn ... --tensorboard runs/tb`
        api.unlearn("rwft-2-o", "runs/original", forget=[3])

Weights & Biases reads the same files: `wandb.init(sync_tensorboard=True)` before the run (or `wandb sync DIR`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastforget.errors import ConfigError

_writer: Any = None
_runs: dict[str, int] = {}


@contextlib.contextmanager
def tensorboard(log_dir: str | Path) -> Iterator[None]:
    """Write every `fit`'s curves inside the block to TensorBoard event files in `log_dir`."""
    global _writer
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'fastforget[tensorboard]'") \
            from None
    previous, _writer = _writer, SummaryWriter(str(Path(log_dir).expanduser()))
    try:
        yield
    finally:
        _writer.close()
        _writer = previous
        _runs.clear()


def active() -> bool:
    return _writer is not None


def run_tag(desc: str) -> str:
    """A tag prefix for one `fit` run, distinct from earlier runs of the same name in this log."""
    _runs[desc] = _runs.get(desc, 0) + 1
    return desc if _runs[desc] == 1 else f"{desc}#{_runs[desc]}"


def scalar(tag: str, value: float, step: int) -> None:
    if _writer is not None:
        _writer.add_scalar(tag, value, step)
