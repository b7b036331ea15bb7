"""ResNet-18 in its CIFAR form: 3x3 stem, no max-pool, so 28-, 32- and 64-pixel inputs keep their resolution."""

from __future__ import annotations

import torch
from torch import nn

from fastforget.models.staged import StagedModel


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(StagedModel):
    """ResNet-18 with named stages `conv1`, `layer1`..`layer4`, `fc`; `width` scales every stage (64 = standard)."""

    stages = ("conv1", "layer1", "layer2", "layer3", "layer4")
    middle_block = "layer3"

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.block_channels = {"conv1": width}
        in_planes = width
        for i, (planes, stride) in enumerate(zip(widths, [1, 2, 2, 2], strict=True), start=1):
            layer = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{i}", layer)
            self.block_channels[f"layer{i}"] = planes
            in_planes = planes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
