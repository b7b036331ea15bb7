"""Unlearning methods: one module per method, each registering itself in `registry.METHODS` on import."""

from __future__ import annotations

import importlib
import pkgutil

from fastforget.unlearn.registry import (
    METHODS,
    Method,
    UnknownMethodError,
    UnlearnContext,
    UnlearnResult,
    get_method,
    register,
    run_method,
)

_INFRASTRUCTURE = {"registry", "common", "reweight"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "UnknownMethodError", "UnlearnContext", "UnlearnResult", "get_method",
           "register", "run_method"]
