"""The demo model: a small 4-stage ResNet for 28×28 grey-scale Fashion-MNIST images.

Widths 32-64-128-256 with one basic block per stage and strides 1-2-2-1, so the last
convolutional stage (``layer4``) outputs 256 feature maps of 7×7 that a global average pool
turns into the 256-d penultimate vector read by the linear head ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from advlens.models.blocks import BasicBlock

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


class FashionResNet(nn.Module):
    """4-stage ResNet (widths 32-64-128-256) for 1×28×28 inputs in normalized space.

    Shape:
        input: (N, 1, 28, 28) normalized; output: logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 widths: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = BasicBlock(widths[0], widths[0], stride=1)
        self.layer2 = BasicBlock(widths[0], widths[1], stride=2)
        self.layer3 = BasicBlock(widths[1], widths[2], stride=2)
        self.layer4 = BasicBlock(widths[2], widths[3], stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
