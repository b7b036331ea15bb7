"""A BatchNorm-free model fitted on digits with the sharded loader: run by tests/test_ddp.py under torchrun (each
rank saves its weights) and in the test's own process (the single-process reference)."""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastforget import distributed
from fastforget.data import load_dataset
from fastforget.data.loaders import Augment, InMemoryLoader
from fastforget.distributed import Shard
from fastforget.train import ExecSpec, SGDSpec, fit

GLOBAL_BATCH = 32


def train(out: Path) -> Shard:
    shard = distributed.init(torch.device("cpu")) if "RANK" in os.environ else Shard()
    dataset = load_dataset("digits")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    mask = (torch.arange(48 * 64).view(48, 64) % 2).float()  # half of the first layer frozen by its mask
    loader = InMemoryLoader(dataset.train_images, dataset.train_labels, batch_size=GLOBAL_BATCH, shuffle=True,
                            augment=Augment(crop_padding=1, flip=True), mean=dataset.mean, std=dataset.std,
                            drop_last=True, seed=3)

    def loss_fn(net, batch, _progress):
        logits = net(batch.images)
        return F.cross_entropy(logits, batch.labels), logits

    fit(model, loader, loss_fn, epochs=2, sgd=SGDSpec(lr=0.05, weight_decay=5e-4, schedule="onecycle"),
        execution=ExecSpec(amp=False), grad_masks={model[1].weight: mask})
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / f"rank{shard.rank}-of-{shard.world}.pt")
    distributed.close()
    return shard


if __name__ == "__main__":
    train(Path(sys.argv[1]))
