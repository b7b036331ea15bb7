"""The fused reweighted cross-entropy (Triton, run here by its interpreter) and its PyTorch reference, against
independent float64 oracles and torch.nn.functional.cross_entropy, on fresh random inputs every run.

Set KERNELS_TEST_DEVICE=cuda (and TRITON_INTERPRET=0) to run the same checks on a GPU (bench/gpu.sh does).
"""

import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import launch
from kernels.dispatch import reweighted_cross_entropy_with_mask

DEVICE = torch.device(os.environ.get("KERNELS_TEST_DEVICE", "cpu"))
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# Inputs are rounded to the dtype before the oracle sees them, so these bound the kernel's own error: float32 math,
# then two roundings of the gradient to the input dtype (in the forward, then after scaling by grad_output), each
# off by half an ulp at most; a whole ulp for bfloat16 under Triton's interpreter, which truncates float32 to
# bfloat16 instead of rounding. atol is relative to the largest gradient entry.
GRAD_ATOL = {torch.float32: 2e-6, torch.bfloat16: 2.1 * 2.0 ** (-7 if INTERPRETED else -8),
             torch.float16: 2.1 * 2.0**-11}
LOSS_RTOL = 2e-5
SHAPES = [  # (B, K, forced chunk width); the last forces the chunked loop over K (10 chunks)
    (1, 2, None), (1, 1000, None), (257, 3, None), (6, 1000, None), (2, 40000, 4096),
]


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


def oracle_loss_and_grad(student: torch.Tensor, target: torch.Tensor, reduction: str, grad_output: torch.Tensor):
    """Loss and gradient through torch.nn.functional.cross_entropy with probability targets, in float64."""
    student64 = student.double().detach().requires_grad_()
    loss = F.cross_entropy(student64, target.double(), reduction=reduction)
    loss.backward(grad_output.double())
    return loss.detach(), student64.grad


def run(fn, student: torch.Tensor, *args, grad_output: torch.Tensor, **kwargs):
    student = student.detach().clone().requires_grad_()
    loss = fn(student, *args, **kwargs)
    loss.backward(grad_output.to(loss.dtype))
    return loss.detach(), student.grad


def assert_matches(loss, grad, expected_loss, expected_grad, dtype, grad_scale: float = 1.0):
    """`grad_scale` (|grad_output|, over B for the mean) sets an absolute floor: p - q* loses about 5e-7 in
    float32 where both are near 1, as in any float32 softmax - target."""
    assert grad.dtype == dtype, "the gradient must come back in the input dtype"
    assert loss.dtype == torch.float32
    assert loss.shape == expected_loss.shape
    torch.testing.assert_close(loss.double(), expected_loss, rtol=LOSS_RTOL, atol=LOSS_RTOL)
    atol = GRAD_ATOL[dtype] * float(expected_grad.abs().max()) + 5e-7 * grad_scale
    torch.testing.assert_close(grad.double(), expected_grad, rtol=0, atol=atol)


def scale_of(grad_output: torch.Tensor, reduction: str, batch: int) -> float:
    return float(grad_output.abs().max()) / (batch if reduction == "mean" else 1)


def random_grad_output(gen: torch.Generator, batch: int, reduction: str) -> torch.Tensor:
    """Not 1, so the backward's scaling by grad_output is checked too; per row for 'none'."""
    shape = (batch,) if reduction == "none" else ()
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 3 + 0.5).to(DEVICE)


@pytest.mark.parametrize("batch, classes, block", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_triton_matches_float64_oracle(gen, batch, classes, block, dtype, reassign):
    student = random_logits(gen, batch, classes, dtype)
    teacher = random_logits(gen, batch, classes, dtype)
    forget = random_forget(gen, classes, 3)
    target = oracle_target(teacher, forget, reassign)
    mask = kernels.forget_mask(forget, classes, DEVICE)
    for reduction in ("none", "mean", "sum"):
        grad_output = random_grad_output(gen, batch, reduction)
        expected = oracle_loss_and_grad(student, target, reduction, grad_output)
        actual = run(reweighted_cross_entropy_with_mask, student, teacher, mask, reassign, reduction,
                     backend="triton", block_size=block, grad_output=grad_output)
        assert_matches(*actual, *expected, dtype, scale_of(grad_output, reduction, batch))


@pytest.mark.parametrize("batch, classes, block", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_soft_target_matches_functional_cross_entropy(gen, batch, classes, block, dtype):
    """Targets that do not sum to 1 check the general gradient p * sum(q) - q of F.cross_entropy."""
    student = random_logits(gen, batch, classes, dtype)
    target = torch.rand(batch, classes, generator=gen, dtype=torch.float64).to(DEVICE)
    for reduction in ("none", "mean", "sum"):
        grad_output = random_grad_output(gen, batch, reduction)
        expected = oracle_loss_and_grad(student, target, reduction, grad_output)
        actual = run(kernels.soft_target_cross_entropy, student, target.float(), reduction, backend="triton",
                     block_size=block, grad_output=grad_output)
        assert_matches(*actual, *expected, dtype, scale_of(grad_output, reduction, batch))


@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_forget_forms_agree(gen, reassign, backend):
    """An int, a list, an index tensor and a bool mask name the same forget set; several classes at once."""
    classes = 13
    student, teacher = random_logits(gen, 9, classes, torch.float32), random_logits(gen, 9, classes, torch.float32)
    forget = random_forget(gen, classes, 4)
    mask = torch.zeros(classes, dtype=torch.bool, device=DEVICE)
    mask[forget] = True
    target = oracle_target(teacher, forget, reassign)
    grad_output = random_grad_output(gen, 9, "mean")
    expected = oracle_loss_and_grad(student, target, "mean", grad_output)
    for form in (forget, torch.tensor(forget, device=DEVICE), mask, tuple(forget)):
        actual = run(kernels.reweighted_cross_entropy, student, teacher, form, reassign, backend=backend,
                     grad_output=grad_output)
        assert_matches(*actual, *expected, torch.float32, scale_of(grad_output, "mean", 9))
    single = run(kernels.reweighted_cross_entropy, student, teacher, forget[0], reassign, "none", backend=backend,
                 grad_output=torch.ones(9, device=DEVICE))
    expected_single = oracle_loss_and_grad(student, oracle_target(teacher, forget[:1], reassign), "none",
                                           torch.ones(9, device=DEVICE))
    assert_matches(*single, *expected_single, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_reference_matches_float64_oracle(gen, dtype, reassign):
    student, teacher = random_logits(gen, 33, 50, dtype), random_logits(gen, 33, 50, dtype)
    forget = random_forget(gen, 50, 2)
    grad_output = random_grad_output(gen, 33, "none")
    expected = oracle_loss_and_grad(student, oracle_target(teacher, forget, reassign), "none", grad_output)
    loss, grad = run(kernels.reweighted_cross_entropy, student, teacher, forget, reassign, "none",
                     backend="reference", grad_output=grad_output)
    if dtype == torch.float64:
        assert loss.dtype == torch.float64
        torch.testing.assert_close((loss, grad), expected)
    else:
        assert_matches(loss, grad, *expected, dtype, scale_of(grad_output, "none", 33))


def test_reweighted_target_matches_oracle(gen):
    teacher = random_logits(gen, 20, 10, torch.float32)
    for reassign in ("proportional", "max-class"):
        target = kernels.reweighted_target(teacher, [2, 7], reassign)
        expected = oracle_target(teacher, [2, 7], reassign)
        torch.testing.assert_close(target.double(), expected, rtol=1e-5, atol=1e-7)
        assert torch.all(target[:, [2, 7]] == 0)


def test_max_class_ties_go_to_first_retained_class():
    """As torch.argmax does, also when the tied classes fall in different chunks of the kernel's loop."""
    teacher = torch.zeros(1, 12, device=DEVICE)
    target = kernels.reweighted_target(teacher, 0, "max-class")
    expected_target = torch.full((1, 12), 1 / 12)
    expected_target[0, :2] = torch.tensor([0.0, 2 / 12])
    torch.testing.assert_close(target.cpu(), expected_target)
    mask = kernels.forget_mask(0, 12, DEVICE)
    for block in (None, 4):
        loss, grad = run(reweighted_cross_entropy_with_mask, torch.zeros(1, 12, device=DEVICE), teacher, mask,
                         "max-class", "sum", backend="triton", block_size=block,
                         grad_output=torch.tensor(1.0, device=DEVICE))
        torch.testing.assert_close(grad.cpu(), 1 / 12 - expected_target)


EXTREME_CASES = {
    "logits +-1e4": ([[1e4, -1e4, 0.0, 3.0, -1e4], [-1e4, 1e4, -1e4, 1e4, 0.0]],
                     [[1e4, -1e4, 5.0, 3.0, -2.0], [1e4, -1e4, -1e4, -1e4, -1e4]]),
    "teacher 1-1e-12 on the forget class": ([[0.5, 1.0, -1.0, 2.0, 0.0]], [[0.0, -29.0, -29.0, -29.0, -29.0]]),
    "all-equal logits": ([[7.0] * 5] * 3, [[7.0] * 5] * 3),
}


@pytest.mark.parametrize("case", EXTREME_CASES, ids=list(EXTREME_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
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
        assert_matches(*actual, *expected, dtype)


@pytest.mark.parametrize("backend", ["reference", "triton"])
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


def test_teacher_gets_no_gradient(gen):
    student = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    teacher = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    for backend in ("reference", "triton"):
        kernels.reweighted_cross_entropy(student, teacher, 0, backend=backend).backward()
        assert teacher.grad is None


def test_second_backward_through_kernel_raises(gen):
    student = random_logits(gen, 4, 6, torch.float32).requires_grad_()
    loss = kernels.reweighted_cross_entropy(student, random_logits(gen, 4, 6, torch.float32), 0, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


def test_no_gradient_buffer_without_grad(gen):
    student, teacher = random_logits(gen, 3, 9, torch.float32), random_logits(gen, 3, 9, torch.float32)
    loss = kernels.reweighted_cross_entropy(student, teacher, 1, "proportional", "none", backend="triton")
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
    assert kernels.choose_backend(None, cpu) == "reference"
    assert kernels.choose_backend("triton", cpu.double()) == "reference"  # the kernels compute in float32
    monkeypatch.setenv("FASTFORGET_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.choose_backend(None, cpu) == "triton"
    assert kernels.choose_backend("reference", cpu) == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need CUDA tensors"):
        kernels.choose_backend(None, cpu)


def test_import_without_triton():
    """Triton is optional: with it missing, `import kernels` works and every call takes the reference."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, kernels\n"
            "assert not kernels.triton_available()\n"
            "s, t = torch.randn(4, 6), torch.randn(4, 6)\n"
            "print(float(kernels.reweighted_cross_entropy(s, t, [1])), float(kernels.tv_distance(s, t).sum()))\n"
            "try:\n    kernels.reweighted_cross_entropy(s, t, 1, backend='triton')\n"
            "except RuntimeError as e:\n    assert 'not importable' in str(e)\nelse:\n    raise SystemExit(1)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
