"""Fused losses for class unlearning: reweighted cross-entropy and total variation.

Triton kernels on CUDA (loss and gradient in one sweep, at the memory-bandwidth floor), a closed-form
autograd Function on the CPU, PyTorch references for float64 and as the tests' oracle (see
`fastforget_kernels.dispatch`). Self-contained (knows nothing of fastforget) so it can be dropped into other
training code. Triton is optional; `python -m fastforget_kernels.aot` compiles every kernel specialization for
sm_80/sm_90 without a GPU.

The folder is `kernels/` in the repository and installs as the package `fastforget_kernels` (also reachable as
`fastforget.kernels`): a top-level `kernels` would collide with the `kernels` package on PyPI. Where a checkout's
root is on sys.path, `import kernels` still works, as a deprecated alias of the same modules.
"""

import sys
import warnings

if __name__ == "kernels":
    warnings.warn("`import kernels` is deprecated and works only from a source checkout: use "
                  "`from fastforget import kernels` or `import fastforget_kernels`", DeprecationWarning, stacklevel=2)
    import fastforget_kernels

    # One set of modules under both names, so that classes and state are not duplicated.
    for _name, _module in list(sys.modules.items()):
        if _name.startswith("fastforget_kernels."):
            sys.modules["kernels" + _name.removeprefix("fastforget_kernels")] = _module
    sys.modules[__name__] = fastforget_kernels
else:
    from .dispatch import (
        BACKENDS,
        choose_backend,
        reweighted_cross_entropy,
        soft_target_cross_entropy,
        triton_available,
        tv_distance,
    )
    from .modules import ReweightedCrossEntropyLoss, TVDistance
    from .reference import reweighted_target
    from .validation import forget_mask

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
