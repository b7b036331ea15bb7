"""VGG-19 with batch norm, in the CIFAR form (one linear classifier), for any input of 28 pixels or more."""

from __future__ import annotations

from torch import nn

from fastforget.models.staged import StagedModel

_STAGES = [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]]


class VGG19BN(StagedModel):
    """Five named conv stages `block1`..`block5` and a linear `fc`; `width` scales channels (64 = standard).

    Pooling uses ceil mode so that 28-pixel inputs (MNIST) survive five halvings.
    """

    stages = tuple(f"block{i}" for i in range(1, 6))
    middle_block = "block4"

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        scale = width / 64
        self.block_channels: dict[str, int] = {}
        channels = in_channels
        for i, stage in enumerate(_STAGES, start=1):
            layers: list[nn.Module] = []
            for planes in stage:
                planes = max(1, round(planes * scale))
                layers += [nn.Conv2d(channels, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes),
                           nn.ReLU(inplace=True)]
                channels = planes
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            setattr(self, f"block{i}", nn.Sequential(*layers))
            self.block_channels[f"block{i}"] = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
