"""Naming classes the way people do (by name or by index) and splitting a data set into forget and retain parts."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

from fastforget.errors import UnknownClassError

_SEPARATORS = re.compile(r"[\s_\-]+")


def _normalise(name: str) -> str:
    """Case-insensitive, with runs of spaces, underscores and hyphens equivalent: 'Aquarium_fish' == 'aquarium fish'."""
    return _SEPARATORS.sub(" ", name.strip().lower())


def _valid_names(classes: Sequence[str]) -> str:
    listed = ", ".join(f"{i}={name}" for i, name in enumerate(classes[:40]))
    return listed + (f", ... ({len(classes)} classes)" if len(classes) > 40 else "")


def resolve_classes(spec: Sequence[str | int], classes: Sequence[str]) -> list[int]:
    """Class indices for names or indices, in the order given, without duplicates.

    A string is first matched against the class names; failing that, a string of digits is an index. So for data
    sets whose names are digits ('0'..'9') both readings agree, and an image folder with numbered class folders is
    addressed by its folder names.
    """
    by_name: dict[str, int] = {}
    for index, name in enumerate(classes):
        by_name.setdefault(_normalise(name), index)
    resolved: list[int] = []
    for item in spec:
        if isinstance(item, Integral) and not isinstance(item, bool):
            index = int(item)
        elif isinstance(item, str) and _normalise(item) in by_name:
            index = by_name[_normalise(item)]
        elif isinstance(item, str) and item.strip().isdigit():
            index = int(item.strip())
        else:
            close = difflib.get_close_matches(_normalise(str(item)), list(by_name), n=3)
            hint = f" Did you mean {', '.join(repr(classes[by_name[c]]) for c in close)}?" if close else ""
            raise UnknownClassError(f"unknown class {item!r}.{hint} Valid classes (name or index): "
                                    f"{_valid_names(classes)}")
        if not 0 <= index < len(classes):
            raise UnknownClassError(f"class index {index} is out of range: the data set has {len(classes)} classes "
                                    f"({_valid_names(classes)})")
        if index not in resolved:
            resolved.append(index)
    return resolved


def class_names(indices: Sequence[int], classes: Sequence[str]) -> list[str]:
    """The names of class indices (checked), for messages, sidecars and reports."""
    return [classes[i] for i in resolve_classes(list(indices), classes)]


@dataclass
class ForgetSplits:
    """Positions of forget (label in the forget set) and retain samples in the train and test splits (int64)."""

    train_f: torch.Tensor
    train_r: torch.Tensor
    test_f: torch.Tensor
    test_r: torch.Tensor

    @classmethod
    def from_labels(cls, train_labels: torch.Tensor, test_labels: torch.Tensor, forget: Sequence[int]) -> ForgetSplits:
        """Split by label; the forget classes must be some, but not all, of the classes present in training."""
        train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
        forget_set = torch.tensor(sorted({int(c) for c in forget}), dtype=torch.int64)
        present = torch.unique(train_labels).cpu()
        if len(forget_set) == 0:
            raise UnknownClassError("no class to forget: name at least one class (by name or index)")
        absent = sorted(set(forget_set.tolist()) - set(present.tolist()))
        if absent:
            raise UnknownClassError(f"forget classes {absent} have no training samples (classes present: "
                                    f"{present.tolist()})")
        if bool(torch.isin(present, forget_set).all()):
            raise UnknownClassError(f"forgetting {forget_set.tolist()} would forget every class; keep at least one")
        train_is_f = torch.isin(train_labels, forget_set.to(train_labels.device))
        test_is_f = torch.isin(test_labels, forget_set.to(test_labels.device))
        return cls(train_f=_positions(train_is_f), train_r=_positions(~train_is_f),
                   test_f=_positions(test_is_f), test_r=_positions(~test_is_f))


    @classmethod
    def from_samples(cls, train_f: torch.Tensor, train_size: int, test_size: int) -> ForgetSplits:
        """Sample-level forgetting: the given training positions against the rest; the test split has no forget
        samples (what is forgotten are particular training samples, not a kind of input)."""
        is_f = torch.zeros(train_size, dtype=torch.bool)
        is_f[train_f] = True
        return cls(train_f=_positions(is_f), train_r=_positions(~is_f), test_f=torch.zeros(0, dtype=torch.int64),
                   test_r=torch.arange(test_size))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask).reshape(-1).to(device="cpu", dtype=torch.int64)
