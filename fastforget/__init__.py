"""fastforget: erase whole classes from image classifiers, fast, and measure how well they were erased.

What the commands do is `fastforget.api` (`api.train`, `api.unlearn`, `api.evaluate`, `api.bench`); the
building blocks below are importable from here and load on first use, so `import fastforget` stays cheap.
(The command names themselves are not re-exported: they are also the names of submodules.)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "fastforget.config", "load_dataset": "fastforget.data", "resolve_classes": "fastforget.data",
    "build_model": "fastforget.models", "load_checkpoint": "fastforget.checkpoint",
    "save_checkpoint": "fastforget.checkpoint", "train_model": "fastforget.train", "fit": "fastforget.train",
    "run_method": "fastforget.unlearn", "UnlearnContext": "fastforget.unlearn", "METHODS": "fastforget.unlearn",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastforget' has no attribute {name!r}")


__all__ = ["__version__", *_EXPORTS]
