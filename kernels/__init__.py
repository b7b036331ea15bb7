"""Fused losses for class unlearning: reweighted cross-entropy and total variation, Triton with PyTorch fallback.

Self-contained (knows nothing of fastforget) so it can be dropped into other training code. Triton is optional:
without it, or on CPU tensors, every function runs its PyTorch reference (see `kernels.dispatch`).
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
