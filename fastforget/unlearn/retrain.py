"""Retrain: the gold standard, a model trained from scratch on the retained data with the original's recipe."""

from __future__ import annotations

import copy

from torch import nn

from fastforget.train import train_model
from fastforget.unlearn.registry import UnlearnContext, register


@register("retrain", summary="train from scratch on the retained training data with the original's recipe",
          data="retain", samples=True, defaults={"epochs": None})
def retrain(ctx: UnlearnContext, hp: dict) -> nn.Module:
    """`epochs` None (or 0) means as many as the config's recipe, i.e. as the original. A model fastforget did not
    build (a user's module) is retrained as a re-initialised copy of itself, with the config's recipe."""
    own = ctx.meta.get("arch") == ctx.cfg.model["arch"]
    samples = ctx.forget_samples is not None  # then: train on every sample but those
    trained = train_model(ctx.cfg, exclude=[] if samples else ctx.forget, seed=ctx.seed, dataset=ctx.dataset,
                          train_indices=ctx.splits.train_r if samples else None, epochs=hp["epochs"] or None,
                          desc="retrain", model=None if own else _fresh(ctx.original))
    # train_model picks its device from the recipe; the caller asked for ctx.device.
    return trained.model.to(ctx.device)


def _fresh(model: nn.Module) -> nn.Module:
    """A copy of `model` with every layer's parameters drawn afresh (`reset_parameters`, as at construction)."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return fresh
