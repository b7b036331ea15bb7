"""What the metric tests share: model outputs with known properties (the `rng` fixture is in conftest.py)."""

from __future__ import annotations

import json

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def random_probs(rng: np.random.Generator, *shape: int, scale: float = 2.0) -> np.ndarray:
    return softmax(scale * rng.standard_normal(shape))


def probs_with(rng: np.random.Generator, columns: np.ndarray | int, values: np.ndarray,
               num_classes: int) -> np.ndarray:
    """Rows whose probability of `columns` (one per row, or one for all) is `values`; the rest of the mass spread
    at random over the other classes."""
    is_column = np.eye(num_classes, dtype=bool)[np.broadcast_to(columns, values.shape)]
    probs = np.zeros((len(values), num_classes))
    probs[is_column] = values
    probs[~is_column] = (rng.dirichlet(np.ones(num_classes - 1), len(values)) * (1.0 - values)[:, None]).ravel()
    return probs


def assert_json_ready(result: object) -> None:
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
