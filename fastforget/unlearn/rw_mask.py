"""RW-mask: no training; forget logits masked at inference, so outputs on forget samples are the RWFT target.

Weights are untouched, so a white-box attacker still finds the class: this is the instant reference point that
shows what the reweighted target alone achieves.
"""

from __future__ import annotations

from torch import nn

from fastforget.models import LogitMask
from fastforget.unlearn.registry import UnlearnContext, register


@register("rw-mask", summary="mask the forget logits at inference (no training; the RWFT target itself)",
          data="none", defaults={})
def rw_mask(ctx: UnlearnContext, hp: dict) -> nn.Module:
    return LogitMask(ctx.copy_original(), ctx.forget, ctx.num_classes)
