"""The fused losses (`kernels/` in the repository, the package `fastforget_kernels` once installed).

`fastforget.kernels` is that package itself, not a copy: `from fastforget import kernels`, then
`kernels.reweighted_cross_entropy(...)`, `kernels.ReweightedCrossEntropyLoss(...)`, `from fastforget.kernels import
launch`. Import a submodule's names through `fastforget_kernels.<submodule>` (e.g. `from fastforget_kernels.dispatch
import ...`), so that each module exists once.
"""

import sys

import fastforget_kernels

sys.modules[__name__] = fastforget_kernels
