"""Fused losses for class unlearning: reweighted cross-entropy and total variation.

Triton kernels on CUDA (loss and gradient in one sweep, at the memory-bandwidth floor), a closed-form
autograd Function on the CPU, PyTorch references for float64 and as the tests' oracle (see `kernels.dispatch`).
Self-contained (knows nothing of fastforget) so it can be dropped into other training code. Triton is optional;
`python -m kernels.aot` compiles every kernel specialization for sm_80/sm_90 without a GPU.
"""

from kernels.dispatch import (
    BACKENDS,
    choose_backend,
    reweighted_cross_entropy,
    soft_target_cross_entropy,
    triton_available,
    tv_distance,
)
from kernels.modules import ReweightedCrossEntropyLoss, TVDistance
from kernels.reference import reweighted_target
from kernels.validation import forget_mask

__all__ = [
    "BACKENDS",
    "ReweightedCrossEntropyLoss",
    "TVDistance",
    "choose_backend",
    "forget_mask",
    "reweighted_cross_entropy",
    "reweighted_target",
    "soft_target_cross_entropy",
    "triton_available",
    "tv_distance",
]
