"""Class naming and forget/retain splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastforget.data import ForgetSplits, class_names, resolve_classes
from fastforget.errors import UnknownClassError

CIFAR100_SOME = ["apple", "aquarium_fish", "baby", "maple_tree", "pickup_truck"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("spec, expected", [
    (["automobile", "3"], [1, 3]),
    (["AutoMobile", " truck "], [1, 9]),
    ([4, np.int64(2)], [4, 2]),
    (["cat", 3, "3", "CAT"], [3]),
    (["ship", "bird", "ship"], [8, 2]),
    ([], []),
])
def test_names_and_indices(spec: list, expected: list[int]) -> None:
    assert resolve_classes(spec, CIFAR10) == expected


@pytest.mark.parametrize("spelling", ["aquarium fish", "Aquarium_Fish", "aquarium-fish", "aquarium  _fish"])
def test_spaces_underscores_and_hyphens_are_equivalent(spelling: str) -> None:
    assert resolve_classes([spelling, "Maple Tree"], CIFAR100_SOME) == [1, 3]


def test_names_win_over_indices_for_numbered_folders() -> None:
    numbered = ["1", "2", "10"]
    assert resolve_classes(["10", "0"], numbered) == [2, 0]
    assert resolve_classes(["1"], numbered) == [0]
    assert resolve_classes([1], numbered) == [1]


def test_unknown_name_lists_the_valid_ones_and_a_suggestion() -> None:
    with pytest.raises(UnknownClassError) as info:
        resolve_classes(["automobil"], CIFAR10)
    message = str(info.value)
    assert "'automobil'" in message and "Did you mean 'automobile'" in message
    assert all(name in message for name in CIFAR10) and "9=truck" in message


@pytest.mark.parametrize("bad", [10, -1, "12", True, 2.0])
def test_out_of_range_or_wrong_type(bad: object) -> None:
    with pytest.raises(UnknownClassError):
        resolve_classes([bad], CIFAR10)


def test_long_class_lists_are_abbreviated() -> None:
    many = [f"class {i}" for i in range(200)]
    with pytest.raises(UnknownClassError) as info:
        resolve_classes(["nope"], many)
    assert "(200 classes)" in str(info.value) and "class 150" not in str(info.value)


def test_class_names() -> None:
    assert class_names([9, 0], CIFAR10) == ["truck", "airplane"]
    with pytest.raises(UnknownClassError):
        class_names([10], CIFAR10)


@pytest.mark.parametrize("num_classes, forget_count", [(10, 1), (10, 3), (7, 6), (100, 5)])
def test_forget_splits_partition_exactly(num_classes: int, forget_count: int) -> None:
    rng = np.random.default_rng()
    train = torch.from_numpy(rng.integers(0, num_classes, 997))
    train[:num_classes] = torch.arange(num_classes)  # every class present
    test = torch.from_numpy(rng.integers(0, num_classes, 311))
    forget = rng.choice(num_classes, forget_count, replace=False).tolist()
    splits = ForgetSplits.from_labels(train, test, forget)
    for labels, f, r in ((train, splits.train_f, splits.train_r), (test, splits.test_f, splits.test_r)):
        assert f.dtype == r.dtype == torch.int64
        expected_f = [i for i, y in enumerate(labels.tolist()) if y in forget]
        expected_r = [i for i, y in enumerate(labels.tolist()) if y not in forget]
        assert f.tolist() == expected_f and r.tolist() == expected_r


def test_forget_split_errors() -> None:
    labels = torch.tensor([0, 1, 2, 2, 1])
    with pytest.raises(UnknownClassError, match="no class"):
        ForgetSplits.from_labels(labels, labels, [])
    with pytest.raises(UnknownClassError, match="every class"):
        ForgetSplits.from_labels(labels, labels, [0, 1, 2])
    with pytest.raises(UnknownClassError, match=r"\[7\]"):
        ForgetSplits.from_labels(labels, labels, [1, 7])
