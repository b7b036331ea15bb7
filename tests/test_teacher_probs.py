"""The drop-in loss with a teacher given as probabilities: `teacher_is_probs=True` gives the loss of its logits,
and probabilities passed where logits are expected draw a warning instead of a silently wrong loss."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import fastforget_kernels as kernels

FORGET = [1, 4]


def _inputs(seed: int, batch: int = 37, classes: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, classes, generator=generator) * 3,
            torch.randn(batch, classes, generator=generator) * 3)


def _oracle(student: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Float64: the teacher's distribution without the forget classes, renormalised, as a probability target."""
    p = teacher_logits.double().softmax(1)
    p[:, FORGET] = 0
    return F.cross_entropy(student.double(), p / p.sum(1, keepdim=True))


@pytest.mark.parametrize("backend", ["reference", "closed-form"])
def test_probabilities_give_the_loss_of_their_logits(backend):
    student, teacher = _inputs(0)
    probs = teacher.softmax(1)
    loss = kernels.reweighted_cross_entropy(student, probs, FORGET, teacher_is_probs=True, backend=backend)
    torch.testing.assert_close(loss.double(), _oracle(student, teacher), rtol=1e-5, atol=1e-6)
    for reassign in ("proportional", "max-class"):
        from_logits = kernels.reweighted_cross_entropy(student, teacher, FORGET, reassign, teacher_is_probs=False,
                                                       backend=backend)
        from_probs = kernels.reweighted_cross_entropy(student, probs, FORGET, reassign, teacher_is_probs=True,
                                                      backend=backend)
        torch.testing.assert_close(from_probs, from_logits, rtol=1e-5, atol=1e-6)
    module = kernels.ReweightedCrossEntropyLoss(FORGET, teacher_is_probs=True)
    torch.testing.assert_close(module(student, probs).double(), _oracle(student, teacher), rtol=1e-5, atol=1e-6)


def test_zero_probabilities_stay_finite():
    student, teacher = _inputs(1)
    probs = F.one_hot(teacher.argmax(1), teacher.shape[1]).float()
    probs[:, FORGET] = 0.0
    probs[probs.sum(1) == 0, 0] = 1.0
    loss = kernels.reweighted_cross_entropy(student, probs, FORGET, teacher_is_probs=True)
    expected = F.cross_entropy(student.double(), probs.double())
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_probabilities_passed_as_logits_warn():
    student, teacher = _inputs(2)
    probs = teacher.softmax(1)
    with pytest.warns(UserWarning, match="look like probabilities.*teacher_is_probs=True"):
        wrong = kernels.reweighted_cross_entropy(student, probs, FORGET)
    assert abs(wrong.item() - _oracle(student, teacher).item()) > 0.1  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.reweighted_cross_entropy(student, teacher, FORGET)  # logits: no warning
        kernels.reweighted_cross_entropy(student, probs, FORGET, teacher_is_probs=False)  # said so: no check
        kernels.reweighted_cross_entropy(student, teacher.sigmoid(), FORGET)  # in [0, 1] but rows do not sum to 1


def test_the_module_checks_its_first_batch_only():
    student, teacher = _inputs(3)
    criterion = kernels.ReweightedCrossEntropyLoss(FORGET)
    with pytest.warns(UserWarning, match="ReweightedCrossEntropyLoss"):
        criterion(student, teacher.softmax(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        criterion(student, teacher.softmax(1))
    assert "teacher_is_probs=None" in repr(criterion)
