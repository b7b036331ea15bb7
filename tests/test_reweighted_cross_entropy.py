"""The reweighted cross-entropy on every path (the Triton kernel, run here by its interpreter; the closed-form
CPU function; the PyTorch reference) against independent float64 oracles and torch.nn.functional.cross_entropy,
on fresh random inputs every run.

Set KERNELS_TEST_DEVICE=cuda (and TRITON_INTERPRET=0) to run the same checks on a GPU (bench/gpu.sh does).
"""

import contextlib
import math
import os
import random
import subprocess
import sys
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

import fastforget_kernels as kernels
from fastforget_kernels import launch
from fastforget_kernels.dispatch import reweighted_cross_entropy_with_mask

DEVICE = torch.device(os.environ.get("KERNELS_TEST_DEVICE", "cpu"))
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# Inputs are rounded to the dtype before the oracle sees them, so the tolerances bound the kernels' own error:
# - one rounding of the gradient to the input dtype, half an ulp (the gradient is rounded once, also when
#   grad_output != 1); a whole ulp for bfloat16 under Triton's interpreter, which truncates float32 to bfloat16;
#   float16's subnormals add half their spacing (2^-25) absolute;
# - float32 row sums: a tree on a GPU and in ATen, but sequential under the interpreter (numpy reduces a
#   joined tensor along a strided axis one element at a time), so up to K * 2^-24 relative there;
# - a few float32 ulps from exp and the subtraction p - q*.
ROUNDING = {torch.float32: 0.0, torch.bfloat16: 2.0 ** (-7 if INTERPRETED else -8), torch.float16: 2.0**-11}
SUBNORMAL = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0**-25}
LOSS_RTOL = 2e-5
BACKENDS = ["triton", "closed-form", "reference"]
SHAPES = [  # (B, K, tiles): every branch of launch.tiling, vector-aligned K and not; "chunks of 16" shrinks
    # the tiles so that K = 40 walks the chunked loop 3 times (cheap under the interpreter)
    (1, 2, "default"), (257, 3, "default"), (5, 100, "default"), (6, 1000, "default"), (3, 1023, "default"),
    (2, 4096, "default"), (2, 5001, "default"), (2, 6000, "default"), (3, 40, "chunks of 16"),
]


def tiled(tiles: str):
    """"chunks of 16": every K > 16 takes the two-sweep chunked path with 16 columns per chunk."""
    return launch.forced_chunks(16) if tiles == "chunks of 16" else contextlib.nullcontext()


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Kernel output buffers start as NaN: an element the kernel never writes fails every comparison."""
    monkeypatch.setattr(launch, "POISON_OUTPUTS", True)


@pytest.fixture
def gen() -> torch.Generator:
    seed = random.SystemRandom().randrange(2**32)
    print(f"random seed {seed}")  # shown with a failure, to replay it
    return torch.Generator().manual_seed(seed)


def random_logits(gen: torch.Generator, batch: int, classes: int, dtype: torch.dtype, scale: float = 4.0):
    return (torch.randn(batch, classes, generator=gen, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def random_forget(gen: torch.Generator, classes: int, count: int) -> list[int]:
    return torch.randperm(classes, generator=gen)[:min(count, classes - 1)].tolist()


def oracle_target(teacher: torch.Tensor, forget: list[int], reassign: str) -> torch.Tensor:
    """q* in float64 written out step by step, independent of the code under test."""
    teacher = teacher.double()
    retained = torch.ones(teacher.shape[1], dtype=torch.bool, device=teacher.device)
    retained[forget] = False
    if reassign == "proportional":  # exp relative to the top retained logit, so a retained class is exp(0) = 1
        top_retained = torch.where(retained, teacher, -torch.inf).max(dim=1, keepdim=True).values
        weights = torch.where(retained, torch.exp(teacher - top_retained), 0.0)
        return weights / weights.sum(dim=1, keepdim=True)
    probs = torch.exp(teacher - teacher.max(dim=1, keepdim=True).values)
    probs = probs / probs.sum(dim=1, keepdim=True)
    kept = probs * retained
    top = torch.where(retained, teacher, -torch.inf).argmax(dim=1)  # on logits: probabilities can all underflow
    kept[torch.arange(len(top)), top] += (probs * ~retained).sum(dim=1)
    return kept


class Expected(NamedTuple):
    loss: torch.Tensor
    grad: torch.Tensor
    mass: torch.Tensor  # the scale of each gradient entry's float32 error (see oracle_loss_and_grad)


def oracle_loss_and_grad(student: torch.Tensor, target: torch.Tensor, reduction: str,
                         grad_output: torch.Tensor | None) -> Expected:
    """Loss and gradient through torch.nn.functional.cross_entropy with probability targets, in float64.
    `grad_output` None: the autograd seed of loss.backward()."""
    student64 = student.double().detach().requires_grad_()
    target = target.double()
    loss = F.cross_entropy(student64, target, reduction=reduction)
    seed = torch.ones_like(loss) if grad_output is None else grad_output.double()
    loss.backward(seed)
    row_scale = seed.abs().expand(student.shape[0]) / (student.shape[0] if reduction == "mean" else 1)
    # p * sum q - q from float32 exponentials: exp(x) is off by |x| ulps of x relative, x = log p + log-sum-exp
    p = student64.detach().softmax(dim=1)
    mass = (p - torch.xlogy(p, p)) * target.sum(dim=1, keepdim=True) + target - torch.xlogy(target, target)
    return Expected(loss.detach(), student64.grad, mass * row_scale[:, None])


def run(fn, student: torch.Tensor, *args, grad_output: torch.Tensor | None, **kwargs):
    """Loss and the student's gradient; grad_output None calls loss.backward() with no argument."""
    student = student.detach().clone().requires_grad_()
    loss = fn(student, *args, **kwargs)
    loss.backward(None if grad_output is None else grad_output.to(loss.dtype))
    return loss.detach(), student.grad


def sum_error(classes: int, backend: str) -> float:
    """Relative error bound of float32 row sums and exponentials (see the tolerances above)."""
    terms = classes if backend == "triton" and INTERPRETED else 2 * math.log2(max(classes, 2)) + 16
    return (terms + 8) * 2.0**-24


def assert_matches(actual, expected: Expected, dtype: torch.dtype, backend: str = "triton"):
    loss, grad = actual
    assert grad.dtype == dtype, "the gradient must come back in the input dtype"
    assert loss.dtype == torch.float32
    assert loss.shape == expected.loss.shape
    classes = grad.shape[1]
    error = sum_error(classes, backend)
    rows = grad.shape[0] if expected.loss.dim() == 0 else 1
    torch.testing.assert_close(loss.double(), expected.loss, rtol=LOSS_RTOL + 2 * error,
                               atol=LOSS_RTOL + rows * error)
    tolerance = ROUNDING[dtype] * expected.grad.abs() + error * expected.mass + SUBNORMAL[dtype]
    excess = (grad.double() - expected.grad).abs() - tolerance
    worst = int(excess.argmax())
    assert excess.max() <= 0, (f"gradient off by {float(excess.flatten()[worst] + tolerance.flatten()[worst]):.3g} "
                               f"(allowed {float(tolerance.flatten()[worst]):.3g}) at flat index {worst}, expected "
                               f"{float(expected.grad.flatten()[worst]):.6g}, got {float(grad.flatten()[worst]):.6g}")


def grad_outputs(gen: torch.Generator, batch: int):
    """(reduction, grad_output): the autograd seed (the backward is free), and values that are not 1 (it
    recomputes with the full scale), per row for 'none'."""
    yield "mean", None
    for reduction, shape in (("none", (batch,)), ("mean", ()), ("sum", ())):
        yield reduction, (torch.rand(shape, generator=gen, dtype=torch.float64) * 3 + 0.5).to(DEVICE)


def one_grad_output(gen: torch.Generator, batch: int) -> torch.Tensor:
    return (torch.rand((), generator=gen, dtype=torch.float64) * 3 + 0.5).to(DEVICE)


@pytest.mark.parametrize("batch, classes, tiles", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_triton_matches_float64_oracle(gen, batch, classes, tiles, dtype, reassign):
    student = random_logits(gen, batch, classes, dtype)
    teacher = random_logits(gen, batch, classes, dtype)
    forget = random_forget(gen, classes, 3)
    target = oracle_target(teacher, forget, reassign)
    mask = kernels.forget_mask(forget, classes, DEVICE)
    for reduction, grad_output in grad_outputs(gen, batch):
        expected = oracle_loss_and_grad(student, target, reduction, grad_output)
        with tiled(tiles):
            actual = run(reweighted_cross_entropy_with_mask, student, teacher, mask, reassign, reduction,
                         backend="triton", grad_output=grad_output)
        assert_matches(actual, expected, dtype)


@pytest.mark.parametrize("batch, classes, tiles", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_soft_target_matches_functional_cross_entropy(gen, batch, classes, tiles, dtype):
    """Targets that do not sum to 1 check the general gradient p * sum(q) - q of F.cross_entropy."""
    student = random_logits(gen, batch, classes, dtype)
    target = torch.rand(batch, classes, generator=gen, dtype=torch.float64).to(DEVICE)
    for reduction, grad_output in grad_outputs(gen, batch):
        expected = oracle_loss_and_grad(student, target, reduction, grad_output)
        with tiled(tiles):
            actual = run(kernels.soft_target_cross_entropy, student, target.float(), reduction, backend="triton",
                         grad_output=grad_output)
        assert_matches(actual, expected, dtype)


@pytest.mark.parametrize("student_dtype, other_dtype", [(torch.bfloat16, torch.float32),
                                                        (torch.float16, torch.float32),
                                                        (torch.float32, torch.bfloat16)], ids=str)
@pytest.mark.parametrize("classes", [10, 1000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_precision_teacher(gen, student_dtype, other_dtype, classes, backend):
    """A half-precision student against a float32 teacher (the teacher's logits kept in float32 under autocast),
    and the other way round; math in float32 on every path, gradient in the student's dtype."""
    student = random_logits(gen, 7, classes, student_dtype)
    teacher = random_logits(gen, 7, classes, other_dtype)
    forget = random_forget(gen, classes, 2)
    for reassign in ("proportional", "max-class"):
        grad_output = one_grad_output(gen, 7)
        expected = oracle_loss_and_grad(student, oracle_target(teacher, forget, reassign), "mean", grad_output)
        actual = run(kernels.reweighted_cross_entropy, student, teacher, forget, reassign, backend=backend,
                     grad_output=grad_output)
        assert_matches(actual, expected, student_dtype, backend)
    target = torch.rand(7, classes, generator=gen, dtype=torch.float64).to(other_dtype).to(DEVICE)
    expected = oracle_loss_and_grad(student, target, "sum", None)
    actual = run(kernels.soft_target_cross_entropy, student, target, "sum", backend=backend, grad_output=None)
    assert_matches(actual, expected, student_dtype, backend)


@pytest.mark.parametrize("batch, classes", [(5, 10), (6, 1000), (2, 5001), (512, 3)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reassign", ["proportional", "max-class", "soft target"])
def test_closed_form_matches_float64_oracle(gen, batch, classes, dtype, reassign):
    """The CPU path: several row blocks (512 x 3 with small blocks), every reduction and grad_output."""
    student = random_logits(gen, batch, classes, dtype)
    teacher = random_logits(gen, batch, classes, dtype)
    forget = random_forget(gen, classes, 2)
    for reduction, grad_output in grad_outputs(gen, batch):
        if reassign == "soft target":
            target = torch.rand(batch, classes, generator=gen, dtype=torch.float64).to(DEVICE)
            actual = run(kernels.soft_target_cross_entropy, student, target.float(), reduction,
                         backend="closed-form", grad_output=grad_output)
        else:
            target = oracle_target(teacher, forget, reassign)
            actual = run(kernels.reweighted_cross_entropy, student, teacher, forget, reassign, reduction,
                         backend="closed-form", grad_output=grad_output)
        assert_matches(actual, oracle_loss_and_grad(student, target, reduction, grad_output), dtype, "closed-form")


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_autocast(gen, backend):
    """Training steps run under autocast: the losses still compute in float32 (matmuls and dot products inside
    would otherwise be cast to bfloat16)."""
    student, teacher = random_logits(gen, 8, 10, torch.bfloat16), random_logits(gen, 8, 10, torch.float32)
    expected = oracle_loss_and_grad(student, oracle_target(teacher, [1, 2], "max-class"), "mean", None)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        actual = run(kernels.reweighted_cross_entropy, student, teacher, [1, 2], "max-class", backend=backend,
                     grad_output=None)
    assert_matches(actual, expected, torch.bfloat16, backend)


@pytest.mark.slow
@pytest.mark.skipif(DEVICE.type == "cuda", reason="the compiled closed form is the CPU path; CUDA takes the kernel")
def test_compiled_closed_form_matches_float64_oracle(gen):
    """The closed form under torch.compile (what large CPU batches take)."""
    for batch, classes in ((64, 10), (9, 300)):
        student, teacher = random_logits(gen, batch, classes, torch.bfloat16), random_logits(gen, batch, classes,
                                                                                             torch.float32)
        for reassign in ("proportional", "max-class"):
            expected = oracle_loss_and_grad(student, oracle_target(teacher, [1, 2], reassign), "mean", None)
            actual = run(kernels.reweighted_cross_entropy, student, teacher, [1, 2], reassign, backend="compiled",
                         grad_output=None)
            assert_matches(actual, expected, torch.bfloat16, "compiled")
    from fastforget_kernels import cpu_cross_entropy

    assert not cpu_cross_entropy.COMPILE_FAILED


@pytest.mark.parametrize("backend", ["closed-form", "triton"])
def test_inside_a_compiled_training_step(gen, backend):
    """A training step compiled whole (`fit` under train.compile): the closed form is traced into the step's graph,
    no graph break, its backward traced by AOTAutograd (also for grad_output != 1, per row); the Triton kernel
    runs between graphs instead (a break around it). Both still match the float64 oracle. Backend aot_eager: the
    same capture as Inductor's, without its code generation (a minute per graph here)."""
    import torch._dynamo

    if backend == "triton" and not (DEVICE.type == "cuda" or INTERPRETED):
        pytest.skip("the Triton kernel needs CUDA or TRITON_INTERPRET=1")
    counters = torch._dynamo.utils.counters
    student, teacher = random_logits(gen, 9, 10, torch.bfloat16), random_logits(gen, 9, 10, torch.float32)
    forget = random_forget(gen, 10, 2)
    mask = kernels.forget_mask(forget, 10, DEVICE)
    target = torch.rand(9, 10, generator=gen, dtype=torch.float64).to(DEVICE)
    cases = [("proportional", reduction, grad_output) for reduction, grad_output in grad_outputs(gen, 9)]
    cases += [("max-class", "mean", None), ("soft target", "sum", one_grad_output(gen, 9))]
    for reassign, reduction, grad_output in cases:
        torch._dynamo.reset()
        if reassign == "soft target":
            def step(s, other, reduction=reduction):
                return kernels.soft_target_cross_entropy(2 * s - s, other, reduction, backend=backend)
            other, expected_target = target.float(), target
        else:
            def step(s, other, reassign=reassign, reduction=reduction):
                return reweighted_cross_entropy_with_mask(2 * s - s, other, mask, reassign, reduction, backend=backend)
            other, expected_target = teacher, oracle_target(teacher, forget, reassign)
        breaks = sum(counters["graph_break"].values())
        actual = run(torch.compile(step, backend="aot_eager", dynamic=False), student, other,
                     grad_output=grad_output)
        breaks = sum(counters["graph_break"].values()) - breaks
        assert (breaks == 0) if backend == "closed-form" else (breaks >= 1), (reassign, reduction, breaks)
        expected = oracle_loss_and_grad(student, expected_target, reduction, grad_output)
        assert_matches(actual, expected, torch.bfloat16, backend)


def test_closed_form_walks_row_blocks(gen, monkeypatch):
    """Rows are processed in cache-sized blocks: with blocks of 3 rows, 10 rows take four blocks."""
    from fastforget_kernels import cpu_cross_entropy

    monkeypatch.setattr(cpu_cross_entropy, "BLOCK_BYTES", 3 * 4 * 6)
    student, teacher = random_logits(gen, 10, 6, torch.float32), random_logits(gen, 10, 6, torch.float32)
    ones = torch.ones(10, device=DEVICE)
    expected = oracle_loss_and_grad(student, oracle_target(teacher, [2], "max-class"), "none", ones)
    actual = run(kernels.reweighted_cross_entropy, student, teacher, 2, "max-class", "none", backend="closed-form",
                 grad_output=ones)
    assert_matches(actual, expected, torch.float32, "closed-form")


@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forget_forms_agree(gen, reassign, backend):
    """An int, a list, an index tensor and a bool mask name the same forget set; several classes at once."""
    classes = 13
    student, teacher = random_logits(gen, 9, classes, torch.float32), random_logits(gen, 9, classes, torch.float32)
    forget = random_forget(gen, classes, 4)
    mask = torch.zeros(classes, dtype=torch.bool, device=DEVICE)
    mask[forget] = True
    target = oracle_target(teacher, forget, reassign)
    grad_output = one_grad_output(gen, 9)
    expected = oracle_loss_and_grad(student, target, "mean", grad_output)
    for form in (forget, torch.tensor(forget, device=DEVICE), mask, tuple(forget)):
        actual = run(kernels.reweighted_cross_entropy, student, teacher, form, reassign, backend=backend,
                     grad_output=grad_output)
        assert_matches(actual, expected, torch.float32, backend)
    single = run(kernels.reweighted_cross_entropy, student, teacher, forget[0], reassign, "none", backend=backend,
                 grad_output=torch.ones(9, device=DEVICE))
    expected_single = oracle_loss_and_grad(student, oracle_target(teacher, forget[:1], reassign), "none",
                                           torch.ones(9, device=DEVICE))
    assert_matches(single, expected_single, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_mask(gen, backend):
    """Regression: a bool mask taken from a column of a [K, 2] tensor has stride 2; the kernel read it with
    stride 1 (loss 2.79249 instead of 2.78593 in the issue's case)."""
    classes = 12
    masks = torch.zeros(classes, 2, dtype=torch.bool, device=DEVICE)
    masks[[1, 4], 0] = True
    masks[[0, 2, 3, 7], 1] = True  # what a stride-1 read of column 0 would partly see instead
    column = masks[:, 0]
    assert not column.is_contiguous()
    student, teacher = random_logits(gen, 6, classes, torch.float32), random_logits(gen, 6, classes, torch.float32)
    expected = oracle_loss_and_grad(student, oracle_target(teacher, [1, 4], "proportional"), "mean", None)
    by_function = run(kernels.reweighted_cross_entropy, student, teacher, column, backend=backend, grad_output=None)
    assert_matches(by_function, expected, torch.float32, backend)
    by_module = run(kernels.ReweightedCrossEntropyLoss(column), student, teacher, grad_output=None)
    assert_matches(by_module, expected, torch.float32)


def test_launch_does_not_depend_on_batch_size():
    """Regression: ROWS followed next_power_of_2(B), so every odd last batch compiled a new kernel. Now the
    tiling depends on K and the dtypes only, and every integer argument is unspecialized (one compiled kernel
    for any B; kernels.aot shows the specialization count)."""
    from fastforget_kernels import triton_cross_entropy as ce

    def constexprs(batch: int) -> dict:
        student = torch.empty(batch, 1000, device="meta")
        loss = torch.empty(batch, device="meta")
        return ce.cross_entropy_launch(student, student, torch.empty(1000, dtype=torch.bool, device="meta"),
                                       ce.PROPORTIONAL, loss, student, ce.FORWARD, 1 / batch).constexprs

    assert all(constexprs(batch) == constexprs(1) for batch in (2, 3, 37, 50, 8191, 8192, 10**6))


@pytest.mark.parametrize("classes", [10, 1000, 5001])
def test_backward_is_free_for_the_autograd_seed(gen, classes):
    """The forward writes the scaled gradient; the backward phase leaves it alone where grad_output == 1
    (checked on the device, per program) and recomputes it with the full scale elsewhere."""
    from fastforget_kernels import triton_cross_entropy as ce

    student, teacher = random_logits(gen, 4, classes, torch.float32), random_logits(gen, 4, classes, torch.float32)
    mask = kernels.forget_mask([0], classes, DEVICE)
    loss = torch.empty(4, device=DEVICE)
    grad = torch.empty_like(student)
    ce.cross_entropy_launch(student, teacher, mask, ce.MAX_CLASS, loss, grad, ce.FORWARD, 0.25)()
    marked = torch.full_like(student, 7.0)
    ce.cross_entropy_launch(student, teacher, mask, ce.MAX_CLASS, loss, marked, ce.BACKWARD, 0.25,
                            torch.ones(1, device=DEVICE))()
    assert torch.all(marked == 7.0), "grad_output == 1 must leave the forward's gradient untouched"
    ce.cross_entropy_launch(student, teacher, mask, ce.MAX_CLASS, loss, marked, ce.BACKWARD, 0.25,
                            torch.full((1,), 3.0, device=DEVICE))()
    torch.testing.assert_close(marked, 3 * grad, rtol=2e-6, atol=1e-9)


def test_half_precision_gradient_is_rounded_once(gen):
    """With grad_output = 3 the float16 gradient equals round(3 * (p - q*) / B) to half an ulp: rounding the
    forward's gradient and then its product with 3 would be off by up to a whole ulp."""
    student = random_logits(gen, 64, 1000, torch.float16)
    teacher = random_logits(gen, 64, 1000, torch.float16)
    grad_output = torch.tensor(3.0, dtype=torch.float64, device=DEVICE)
    expected = oracle_loss_and_grad(student, oracle_target(teacher, [5], "proportional"), "sum", grad_output)
    actual = run(kernels.reweighted_cross_entropy, student, teacher, 5, "proportional", "sum", backend="triton",
                 grad_output=grad_output)
    assert_matches(actual, expected, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_reference_matches_float64_oracle(gen, dtype, reassign):
    student, teacher = random_logits(gen, 33, 50, dtype), random_logits(gen, 33, 50, dtype)
    forget = random_forget(gen, 50, 2)
    grad_output = (torch.rand(33, generator=gen, dtype=torch.float64) * 3 + 0.5).to(DEVICE)
    expected = oracle_loss_and_grad(student, oracle_target(teacher, forget, reassign), "none", grad_output)
    loss, grad = run(kernels.reweighted_cross_entropy, student, teacher, forget, reassign, "none",
                     backend="reference", grad_output=grad_output)
    if dtype == torch.float64:
        assert loss.dtype == torch.float64
        torch.testing.assert_close((loss, grad), expected[:2])
    else:
        assert_matches((loss, grad), expected, dtype, "reference")


def test_reweighted_target_matches_oracle(gen):
    teacher = random_logits(gen, 20, 10, torch.float32)
    for reassign in ("proportional", "max-class"):
        target = kernels.reweighted_target(teacher, [2, 7], reassign)
        expected = oracle_target(teacher, [2, 7], reassign)
        torch.testing.assert_close(target.double(), expected, rtol=1e-5, atol=1e-7)
        assert torch.all(target[:, [2, 7]] == 0)


@pytest.mark.parametrize("tiles", ["default", "chunks of 16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_max_class_ties_go_to_first_retained_class(tiles, backend):
    """As torch.argmax does, also when the tied classes fall in different chunks of the kernel's loop."""
    classes = 40
    teacher = torch.zeros(1, classes, device=DEVICE)
    teacher[0, [0, 1, 17, 33]] = 1.0  # class 0 forgotten; 1, 17 and 33 tie for the top retained class
    expected_target = oracle_target(teacher, [0], "max-class").float()
    assert expected_target[0, 1] > expected_target[0, 17] == expected_target[0, 33]
    torch.testing.assert_close(kernels.reweighted_target(teacher, 0, "max-class"), expected_target)
    mask = kernels.forget_mask(0, classes, DEVICE)
    with tiled(tiles):
        _, grad = run(reweighted_cross_entropy_with_mask, torch.zeros(1, classes, device=DEVICE), teacher, mask,
                      "max-class", "sum", backend=backend, grad_output=None)
    torch.testing.assert_close(grad, 1 / classes - expected_target)


EXTREME_CASES = {
    "logits +-1e4": ([[1e4, -1e4, 0.0, 3.0, -1e4], [-1e4, 1e4, -1e4, 1e4, 0.0]],
                     [[1e4, -1e4, 5.0, 3.0, -2.0], [1e4, -1e4, -1e4, -1e4, -1e4]]),
    "teacher 1-1e-12 on the forget class": ([[0.5, 1.0, -1.0, 2.0, 0.0]], [[0.0, -29.0, -29.0, -29.0, -29.0]]),
    "all-equal logits": ([[7.0] * 5] * 3, [[7.0] * 5] * 3),
}


@pytest.mark.parametrize("case", EXTREME_CASES, ids=list(EXTREME_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_inputs_stay_finite(case, dtype, backend):
    """The confident forget samples are the ones that matter: 1 - p_f is 0 there, yet q* is well defined."""
    student_rows, teacher_rows = EXTREME_CASES[case]
    student = torch.tensor(student_rows, dtype=dtype, device=DEVICE)
    teacher = torch.tensor(teacher_rows, dtype=dtype, device=DEVICE)
    for reassign in ("proportional", "max-class"):
        target = oracle_target(teacher, [0], reassign)
        grad_output = torch.ones(len(student_rows), dtype=torch.float64, device=DEVICE)
        expected = oracle_loss_and_grad(student, target, "none", grad_output)
        actual = run(kernels.reweighted_cross_entropy, student, teacher, 0, reassign, "none", backend=backend,
                     grad_output=grad_output)
        assert all(torch.isfinite(t).all() for t in actual)
        assert_matches(actual, expected, dtype, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_classes(gen, backend):
    """K=2 with one class forgotten: the target is one-hot on the other class, whatever the teacher says."""
    student = random_logits(gen, 5, 2, torch.float32)
    teacher = random_logits(gen, 5, 2, torch.float32)
    loss, grad = run(kernels.reweighted_cross_entropy, student, teacher, 1, "proportional", "none",
                     backend=backend, grad_output=torch.ones(5, device=DEVICE))
    torch.testing.assert_close(loss, -student.log_softmax(dim=1)[:, 0])
    torch.testing.assert_close(grad, student.softmax(dim=1) - torch.tensor([1.0, 0.0], device=DEVICE))


def test_module_matches_function(gen):
    student, teacher = random_logits(gen, 7, 11, torch.float32), random_logits(gen, 7, 11, torch.float32)
    loss_fn = kernels.ReweightedCrossEntropyLoss(forget=[3, 4], reassign="max-class", reduction="sum")
    grad_output = torch.tensor(1.0, device=DEVICE)
    by_module = run(loss_fn, student, teacher, grad_output=grad_output)
    by_function = run(kernels.reweighted_cross_entropy, student, teacher, [3, 4], "max-class", "sum",
                      grad_output=grad_output)
    torch.testing.assert_close(by_module, by_function)
    assert "max-class" in repr(loss_fn)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_gets_no_gradient(gen, backend):
    student = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    teacher = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    kernels.reweighted_cross_entropy(student, teacher, 0, backend=backend).backward()
    assert teacher.grad is None


@pytest.mark.parametrize("backend", ["triton", "closed-form"])
def test_second_backward_raises(gen, backend):
    student = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    loss = kernels.reweighted_cross_entropy(student, random_logits(gen, 4, 6, torch.float32), 0, backend=backend)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


@pytest.mark.parametrize("backend", ["triton", "closed-form"])
def test_no_gradient_buffer_without_grad(gen, backend):
    student, teacher = random_logits(gen, 3, 9, torch.float32), random_logits(gen, 3, 9, torch.float32)
    loss = kernels.reweighted_cross_entropy(student, teacher, 1, "proportional", "none", backend=backend)
    expected = F.cross_entropy(student.double(), oracle_target(teacher, [1], "proportional"), reduction="none")
    torch.testing.assert_close(loss.double(), expected, rtol=LOSS_RTOL, atol=LOSS_RTOL)
    assert not loss.requires_grad


@pytest.mark.parametrize("call, error, message", [
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, list(range(5))), ValueError, "covers all 5 classes"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, torch.ones(5, dtype=torch.bool)), ValueError,
     "covers all"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t[:2], 0), ValueError, "same shape"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t[:, :4], 0), ValueError, "same shape"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, 5), ValueError, r"out of range .* \[0, 4\]"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, [-1]), ValueError, "out of range"),
    (lambda s, t: kernels.reweighted_cross_entropy(s.long(), t, 0), TypeError, "floating point"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t.int(), 0), TypeError, "floating point"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, torch.tensor([1.0])), TypeError, "integer class"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, torch.ones(4, dtype=torch.bool)), ValueError,
     r"shape \(5,\)"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, True), TypeError, "ambiguous"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, "cat"), TypeError, "class names"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, 0, reassign="max"), ValueError, "max-class"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, 0, reduction="avg"), ValueError, "'mean'"),
    (lambda s, t: kernels.reweighted_cross_entropy(s[0], t[0], 0), ValueError, r"\[B, K\]"),
    (lambda s, t: kernels.reweighted_cross_entropy(s, t, 0, backend="cuda"), ValueError, "'triton'"),
    (lambda s, t: kernels.soft_target_cross_entropy(s, t[:, :3]), ValueError, "same shape"),
    (lambda s, t: kernels.ReweightedCrossEntropyLoss(0, reduction="avg"), ValueError, "reduction"),
])
def test_clear_errors(call, error, message):
    student, teacher = torch.randn(3, 5, device=DEVICE), torch.randn(3, 5, device=DEVICE)
    with pytest.raises(error, match=message):
        call(student, teacher)


def test_dispatch_choice(monkeypatch):
    cpu = torch.zeros(2, 3)
    monkeypatch.delenv("FASTFORGET_KERNELS", raising=False)
    assert kernels.choose_backend(None, cpu) == "closed-form"
    assert kernels.choose_backend(None, cpu.double()) == "reference"
    assert kernels.choose_backend("triton", cpu.double()) == "reference"  # the kernels compute in float32
    monkeypatch.setenv("FASTFORGET_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.choose_backend(None, cpu) == "triton"
    assert kernels.choose_backend("reference", cpu) == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need CUDA tensors"):
        kernels.choose_backend(None, cpu)


def test_import_without_triton():
    """Triton is optional: with it missing, `import fastforget_kernels` works and every call takes the reference."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, fastforget_kernels as kernels\n"
            "assert not kernels.triton_available()\n"
            "s, t = torch.randn(4, 6), torch.randn(4, 6)\n"
            "print(float(kernels.reweighted_cross_entropy(s, t, [1])), float(kernels.tv_distance(s, t).sum()))\n"
            "try:\n    kernels.reweighted_cross_entropy(s, t, 1, backend='triton')\n"
            "except RuntimeError as e:\n    assert 'not importable' in str(e)\nelse:\n    raise SystemExit(1)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
