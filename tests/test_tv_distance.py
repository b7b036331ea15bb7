"""Total variation (Triton under its interpreter, and the PyTorch reference) against a numpy float64 oracle, on
fresh random inputs every run. KERNELS_TEST_DEVICE=cuda runs the same checks on a GPU (bench/gpu.sh)."""

import contextlib
import os
import random

import numpy as np
import pytest
import torch

import fastforget_kernels as kernels
from fastforget_kernels import launch

DEVICE = torch.device(os.environ.get("KERNELS_TEST_DEVICE", "cpu"))
# Inputs are rounded to the dtype before the oracle sees them; what remains is float32 arithmetic.
ATOL = 2e-6


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Kernel output buffers start as NaN: an element the kernel never writes fails every comparison."""
    monkeypatch.setattr(launch, "POISON_OUTPUTS", True)


@pytest.fixture
def rng() -> np.random.Generator:
    seed = random.SystemRandom().randrange(2**32)
    print(f"random seed {seed}")  # shown with a failure, to replay it
    return np.random.default_rng(seed)


def numpy_tv(a: np.ndarray, b: np.ndarray, from_logits: bool) -> np.ndarray:
    if from_logits:
        a, b = (np.exp(x - x.max(axis=-1, keepdims=True)) for x in (a, b))
        a, b = a / a.sum(axis=-1, keepdims=True), b / b.sum(axis=-1, keepdims=True)
    return 0.5 * np.abs(a - b).sum(axis=-1)


def to_torch(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(x).to(dtype).to(DEVICE)


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.double().cpu().numpy()


SHAPE_PAIRS = {  # (shape of a, shape of b, forced chunk width): every branch of launch.tiling, every layout
    "rows": ((257, 3), (257, 3), None),
    "one row K=2": ((1, 2), (1, 2), None),
    "models against one": ((4, 33, 1000), (33, 1000), None),
    "one against models": ((33, 10), (3, 33, 10), None),
    "models against one, K=1023": ((3, 5, 1023), (5, 1023), None),
    "models against one, K=4096": ((3, 2, 4096), (2, 4096), None),
    "models against one, chunked K=5001": ((3, 2, 5001), (2, 5001), None),
    "unbatched": ((7,), (7,), None),
    "two leading dims": ((2, 3, 5, 11), (5, 11), None),
    "row broadcast": ((3, 1, 6), (3, 4, 6), None),
    "chunked K=6000": ((2, 6000), (2, 6000), None),
    "models against one, chunks of 16": ((3, 4, 40), (4, 40), 16),
}


def tiled(width: int | None):
    return launch.forced_chunks(width) if width else contextlib.nullcontext()


@pytest.mark.parametrize("pair", SHAPE_PAIRS, ids=list(SHAPE_PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_matches_numpy_from_logits(rng, pair, dtype, backend):
    shape_a, shape_b, block = SHAPE_PAIRS[pair]
    a, b = to_torch(rng.normal(0, 3, shape_a), dtype), to_torch(rng.normal(0, 3, shape_b), dtype)
    with tiled(block):
        tv = kernels.tv_distance(a, b, backend=backend)
    expected = numpy_tv(as_numpy(a), as_numpy(b), from_logits=True)
    assert tv.dtype == torch.float32 and tv.shape == expected.shape
    np.testing.assert_allclose(as_numpy(tv), expected, rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("pair", ["rows", "models against one", "one against models", "chunked K=6000",
                                  "models against one, chunks of 16"])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_matches_numpy_from_probabilities(rng, pair, backend):
    shape_a, shape_b, block = SHAPE_PAIRS[pair]
    a = rng.dirichlet(np.ones(shape_a[-1]), size=shape_a[:-1])
    b = rng.dirichlet(np.ones(shape_b[-1]) * 0.3, size=shape_b[:-1])
    with tiled(block):
        tv = kernels.tv_distance(to_torch(a, torch.float32), to_torch(b, torch.float32), from_logits=False,
                                 backend=backend)
    np.testing.assert_allclose(as_numpy(tv), numpy_tv(a, b, from_logits=False), rtol=1e-5, atol=ATOL)


def test_float64_takes_the_reference_in_float64(rng):
    a, b = rng.normal(size=(5, 9)), rng.normal(size=(5, 9))
    tv = kernels.tv_distance(torch.from_numpy(a), torch.from_numpy(b), backend="triton")
    assert tv.dtype == torch.float64
    np.testing.assert_allclose(tv.numpy(), numpy_tv(a, b, from_logits=True), rtol=1e-12)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_known_values_and_extremes(backend):
    """Identical rows are 0 apart, disjoint one-hots 1 apart, and logits of +-1e4 stay finite."""
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [5.0, 5.0, 5.0]], device=DEVICE)
    same = kernels.tv_distance(logits, logits, backend=backend)
    torch.testing.assert_close(same, torch.zeros(3, device=DEVICE))
    flipped = kernels.tv_distance(logits, logits[[1, 0, 2]], backend=backend)
    torch.testing.assert_close(flipped, torch.tensor([1.0, 1.0, 0.0], device=DEVICE))
    onehots = torch.eye(4, device=DEVICE)
    torch.testing.assert_close(kernels.tv_distance(onehots, onehots.roll(1, dims=0), from_logits=False,
                                                   backend=backend), torch.ones(4, device=DEVICE))


def test_gradient_goes_through_the_reference(rng):
    """The kernel has no backward; inputs that require grad get autograd through the reference."""
    a = to_torch(rng.normal(size=(3, 6)), torch.float32).requires_grad_()
    b = to_torch(rng.normal(size=(6,)), torch.float32)
    kernels.tv_distance(a, b, backend="triton").sum().backward()
    a64 = a.detach().double().requires_grad_()
    kernels.tv_distance(a64, b.double()).sum().backward()
    torch.testing.assert_close(a.grad, a64.grad.float())


def test_module_matches_function(rng):
    a, b = to_torch(rng.normal(size=(2, 4, 5)), torch.float32), to_torch(rng.normal(size=(4, 5)), torch.float32)
    torch.testing.assert_close(kernels.TVDistance()(a, b), kernels.tv_distance(a, b))
    probs = a.softmax(dim=-1)
    torch.testing.assert_close(kernels.TVDistance(from_logits=False)(probs, b.softmax(dim=-1)),
                               kernels.tv_distance(a, b))


@pytest.mark.parametrize("a, b, error, message", [
    (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), TypeError, "floating point"),
    (torch.zeros(3, 4), torch.zeros(3, 5), ValueError, "same number of classes"),
    (torch.zeros(2, 3, 4), torch.zeros(5, 4), ValueError, "do not broadcast"),
    (torch.zeros(()), torch.zeros(()), ValueError, r"\[\.\.\., K\]"),
])
def test_clear_errors(a, b, error, message):
    with pytest.raises(error, match=message):
        kernels.tv_distance(a.to(DEVICE), b.to(DEVICE))


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_mixed_dtypes(rng, backend):
    """A bfloat16 batch against float32 outputs: both read as float32."""
    a, b = to_torch(rng.normal(0, 3, (3, 9, 100)), torch.bfloat16), to_torch(rng.normal(0, 3, (9, 100)), torch.float32)
    tv = kernels.tv_distance(a, b, backend=backend)
    np.testing.assert_allclose(as_numpy(tv), numpy_tv(as_numpy(a), as_numpy(b), from_logits=True), rtol=1e-5,
                               atol=ATOL)


def test_shared_operand_is_read_in_place():
    """[M, B, K] against [B, K]: the kernel's `b` is the shared [B, K] rows themselves (no M-fold copy), with
    either operand order; without a shared operand the rows are flattened."""
    from fastforget_kernels.triton_tv_distance import as_outer_inner

    models, batch = torch.randn(4, 33, 10), torch.randn(33, 10)
    for a, b in ((models, batch), (batch, models)):
        a_view, b_view = as_outer_inner(a, b)
        assert a_view.shape == (4, 33, 10) and b_view.shape == (1, 33, 10)
        assert b_view.data_ptr() == batch.data_ptr() and a_view.data_ptr() == models.data_ptr()
    a_view, b_view = as_outer_inner(models, models + 1)
    assert a_view.shape == b_view.shape == (1, 4 * 33, 10)
