"""Inference: a model's logits on uint8 images, and top-1 accuracy. Used by the recipe, the methods, evaluation."""

from __future__ import annotations

import torch
from torch import nn

from fastforget.data import ImageDataset, ordered_loader
from fastforget.data.stream import StreamedImages
from fastforget.runtime import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor | StreamedImages, dataset: ImageDataset, *,
                   batch_size: int = 512, device: torch.device | None = None, amp: bool = False) -> torch.Tensor:
    """Logits of `model` on uint8 images (or streamed ones), in fp32 on the CPU, in the order given (eval mode, no
    augmentation)."""
    device = device or next(model.parameters()).device
    labels = torch.zeros(len(images), dtype=torch.long)
    loader = ordered_loader(images, labels, batch_size=batch_size, shuffle=False, mean=dataset.mean,
                            std=dataset.std, device=device)
    was_training = model.training
    model.eval()
    outs = []
    for x, _, _ in loader:
        with autocast(device, amp):
            outs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (nan for no samples)."""
    return 100.0 * (logits.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")
