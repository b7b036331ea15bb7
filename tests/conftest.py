"""Shared fixtures. TRITON_INTERPRET must be set before `fastforget_kernels` is first imported."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTFORGET_PROGRESS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def shared_data_root() -> Path | None:
    """The folder of real data sets (../shared/data), made known by $FASTFORGET_DATA or found beside the repo."""
    env = os.environ.get("FASTFORGET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if (path / "MNIST").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data sets not found: set FASTFORGET_DATA to the shared data folder (.ci/run does)")
    return root


DIGITS_FORGET = [3]


@pytest.fixture(scope="session")
def digits_cfg():
    """The digits config, shortened so that a model trains in seconds."""
    from fastforget.config import load_config

    return load_config("digits", ["train.epochs=15", "model.width=16"])


@pytest.fixture(scope="session")
def digits_original(digits_cfg):
    """A digits CNN trained on every class (the model that methods unlearn from)."""
    from fastforget.train import train_model

    return train_model(digits_cfg, seed=0)


@pytest.fixture(scope="session")
def digits_retrained(digits_cfg):
    """The gold standard for DIGITS_FORGET: the same recipe without the forgotten class."""
    from fastforget.train import train_model

    return train_model(digits_cfg, exclude=DIGITS_FORGET, seed=0)


@pytest.fixture
def rng(request: pytest.FixtureRequest):
    """A fresh numpy generator per test, its seed printed so that a failure can be replayed."""
    import numpy as np

    seed = int.from_bytes(os.urandom(4), "little")
    print(f"{request.node.name}: numpy seed {seed}")
    return np.random.default_rng(seed)
