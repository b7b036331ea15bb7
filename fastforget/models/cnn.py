"""A small CNN for 8x8 digits: the model behind the seconds-long default runs and tests."""

from __future__ import annotations

from torch import nn

from fastforget.models.staged import StagedModel


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(StagedModel):
    """Named blocks `conv1`, `block1`, `block2`, `fc`, mirroring ResNet's stem / stages / classifier split."""

    stages = ("conv1", "block1", "block2")
    middle_block = "block2"

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, width))
        self.block1 = nn.Sequential(*_conv_bn(width, 2 * width), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*_conv_bn(2 * width, 4 * width))
        self.block_channels = {"conv1": width, "block1": 2 * width, "block2": 4 * width}
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
