"""Retrain: the gold standard, a model trained from scratch on the retained data with the original's recipe."""

from __future__ import annotations

from torch import nn

from fastforget.train import train_model
from fastforget.unlearn.registry import UnlearnContext, register


@register("retrain", summary="train from scratch on the retained training data with the original's recipe",
          data="retain", defaults={"epochs": None})
def retrain(ctx: UnlearnContext, hp: dict) -> nn.Module:
    """`epochs` None (or 0) means as many as the config's recipe, i.e. as the original."""
    trained = train_model(ctx.cfg, exclude=ctx.forget, seed=ctx.seed, dataset=ctx.dataset,
                          epochs=hp["epochs"] or None, desc="retrain")
    # train_model picks its device from the recipe; the caller asked for ctx.device.
    return trained.model.to(ctx.device)
