"""The public functions: check inputs once, then run the Triton kernel, the closed form or the PyTorch reference.

Path choice, in order: the `backend` argument, then $FASTFORGET_KERNELS (triton | closed-form | reference |
compiled), then automatic: CUDA tensors of a kernel dtype with Triton importable take the Triton kernel; other
tensors of a kernel dtype take the closed-form cross-entropy (`kernels.cpu_cross_entropy`: loss and gradient in
one forward; eager for small batches, torch.compile'd from 2^16 elements on, the fastest CPU forms measured in
bench/KERNELS.md) and the reference TV distance. float64 and empty inputs always take the reference (the
kernels compute in float32). Forcing `triton` on CPU tensors works only under TRITON_INTERPRET=1 (set before
`import fastforget_kernels`), which is how the tests run the kernels without a GPU. `compiled` is the closed form always
compiled (cross-entropy) and the reference under torch.compile (TV distance).

Inside a caller's torch.compile'd region (a training step compiled whole) the closed form is traced into the
caller's graph, and the Triton kernel runs as it is between two graphs (`triton_cross_entropy`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from . import reference
from .cpu_cross_entropy import ClosedFormCrossEntropyFunction
from .validation import (
    KERNEL_DTYPES,
    REASSIGN_MODES,
    REDUCTIONS,
    Forget,
    check_choice,
    check_float_tensor,
    check_same_rows,
    forget_mask,
    teacher_as_logits,
)

ENV_VAR = "FASTFORGET_KERNELS"
BACKENDS = ("triton", "closed-form", "reference", "compiled")
CLOSED_FORMS = {"closed-form": "auto", "compiled": "compiled"}  # backend -> form of the closed-form cross-entropy


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports; it is optional, so that `import fastforget_kernels` works where it is not installed."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def choose_backend(requested: str | None, *tensors: torch.Tensor) -> str:
    """Which implementation runs for these tensors (see the module docstring for the order of precedence)."""
    choice = requested or os.environ.get(ENV_VAR) or "auto"
    check_choice(f"the kernel backend (backend= or ${ENV_VAR})", choice, (*BACKENDS, "auto"))
    if any(t.dtype == torch.float64 or t.numel() == 0 for t in tensors):
        return "reference"
    on_cuda = all(t.is_cuda for t in tensors)
    if choice == "auto":
        if not all(t.dtype in KERNEL_DTYPES for t in tensors):
            return "reference"
        return "triton" if on_cuda and triton_available() else "closed-form"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"backend 'triton' was asked for but Triton is not importable; "
                               f"pip install triton, or use backend='reference' / unset ${ENV_VAR}")
        if not on_cuda and not triton_interpreted():
            raise ValueError("the Triton kernels need CUDA tensors; on CPU use backend='reference', or set "
                             "TRITON_INTERPRET=1 before `import fastforget_kernels` to run them in Triton's "
                             "interpreter")
    return choice


@functools.cache
def compiled(fn: Callable) -> Callable:
    """The reference under torch.compile, compiled lazily on first use (compiling costs seconds)."""
    return torch.compile(fn)


@torch.compiler.disable(reason="the hand-written Triton kernel runs as it is, between the compiled graphs")
def triton_cross_entropy(student: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None, mode: object,
                         reduction: str) -> torch.Tensor:
    """The Triton kernel's autograd Function. Inside a torch.compile'd region TorchDynamo breaks the graph around
    it rather than tracing it: the kernel already fuses loss and gradient into one launch, and its gradient buffer
    handed over through the autograd context is not a form TorchDynamo traces. (The closed form, which the CPU
    takes, is traced into the caller's graph instead.)"""
    from .triton_cross_entropy import ReweightedCrossEntropyFunction

    return ReweightedCrossEntropyFunction.apply(student, other, mask, mode, reduction)


def reweighted_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, forget: Forget,
                             reassign: str = "proportional", reduction: str = "mean", *,
                             teacher_is_probs: bool | None = None, backend: str | None = None) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's distribution with the forget classes' mass reassigned.

    q* = softmax(teacher with forget columns at -inf) for `proportional`; for `max-class` the teacher's
    probabilities with the whole forgotten mass on its most likely retained class. Loss per row
    -sum_y q*(y) log softmax(student)(y); gradient softmax(student) - q* (times the reduction's scale), returned
    in the student's dtype. The teacher gets no gradient. `forget`: a class index, indices (list or tensor) or
    a bool mask of length K. The loss is float32 (float64 for float64 inputs). The teacher is logits;
    `teacher_is_probs=True` takes probabilities instead (see `validation.teacher_as_logits`, which also warns when
    logits were promised implicitly and the rows look like probabilities).
    """
    check_float_tensor("student_logits", student_logits)
    check_float_tensor("teacher_logits", teacher_logits)
    check_same_rows(student_logits, teacher_logits, "teacher_logits")
    check_choice("reassign", reassign, REASSIGN_MODES)
    check_choice("reduction", reduction, REDUCTIONS)
    teacher_logits = teacher_as_logits(teacher_logits, teacher_is_probs, "reweighted_cross_entropy")
    mask = forget_mask(forget, student_logits.shape[1], student_logits.device)
    return reweighted_cross_entropy_with_mask(student_logits, teacher_logits, mask, reassign, reduction,
                                              backend=backend)


def reweighted_cross_entropy_with_mask(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                                       mask: torch.Tensor, reassign: str, reduction: str, *,
                                       backend: str | None = None) -> torch.Tensor:
    """`reweighted_cross_entropy` for checked inputs and a checked bool mask on their device (the module caches
    the mask, which spares a host-device sync per step)."""
    path = choose_backend(backend, student_logits, teacher_logits)
    if path == "triton":
        from .triton_cross_entropy import MODES

        return triton_cross_entropy(student_logits, teacher_logits.detach(), mask, MODES[reassign], reduction)
    if path in ("closed-form", "compiled"):
        return ClosedFormCrossEntropyFunction.apply(student_logits, teacher_logits, mask, reassign, reduction,
                                                    CLOSED_FORMS[path])
    return reference.reweighted_cross_entropy_reference(student_logits, teacher_logits, mask, reassign, reduction)


def soft_target_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor,
                              reduction: str = "mean", *, backend: str | None = None) -> torch.Tensor:
    """-sum_y q(y) log softmax(student)(y) for a given target distribution per row (e.g. precomputed q*).

    Matches torch.nn.functional.cross_entropy with probability targets, gradient p * sum(q) - q included, but the
    target gets no gradient. Loss float32 (float64 for float64 inputs); gradient in the student's dtype.
    """
    check_float_tensor("student_logits", student_logits)
    check_float_tensor("target_probs", target_probs)
    check_same_rows(student_logits, target_probs, "target_probs")
    check_choice("reduction", reduction, REDUCTIONS)
    path = choose_backend(backend, student_logits, target_probs)
    if path == "triton":
        from .triton_cross_entropy import SOFT_TARGET

        return triton_cross_entropy(student_logits, target_probs.detach(), None, SOFT_TARGET, reduction)
    if path in ("closed-form", "compiled"):
        return ClosedFormCrossEntropyFunction.apply(student_logits, target_probs, None, None, reduction,
                                                    CLOSED_FORMS[path])
    return reference.soft_target_cross_entropy_reference(student_logits, target_probs, reduction)


def tv_distance(a: torch.Tensor, b: torch.Tensor, from_logits: bool = True, *,
                backend: str | None = None) -> torch.Tensor:
    """Total variation 0.5 * sum |p_a - p_b| over the last dimension, for every row; leading dims broadcast.

    [M, B, K] against [B, K] gives [M, B] (M models against one). `from_logits=False` takes probabilities.
    The Triton kernel has no backward: where an input requires grad, the reference (autograd) runs instead.
    Result float32 (float64 for float64 inputs).
    """
    check_float_tensor("a", a)
    check_float_tensor("b", b)
    if a.dim() == 0 or b.dim() == 0 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must both be [..., K] with the same number "
                         "of classes K in the last dimension")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as error:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast: leading dimensions must "
                         "match or be 1 (e.g. [M, B, K] against [B, K])") from error
    if a.device != b.device:
        raise ValueError(f"a is on {a.device} but b is on {b.device}; move both to one device with .to(device)")
    path = choose_backend(backend, a, b)
    needs_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if path == "triton" and not needs_grad:
        from .triton_tv_distance import tv_distance_triton

        return tv_distance_triton(a, b, from_logits)
    fn = reference.tv_distance_reference  # TV has no closed-form path: it is evaluation-only, autograd costs nothing
    return (compiled(fn) if path == "compiled" else fn)(a, b, from_logits)
