"""ResNet-18 for 32×32 CIFAR-10 images (He et al. 2016, CIFAR variant: 3×3 stem, no max pool).

Users bring their own weights; the layer names follow the common ``kuangliu/pytorch-cifar``
layout (``conv1``, ``bn1``, ``layer1..4``, ``linear``) so such checkpoints load directly.
"""

from __future__ import annotations

import torch
from torch import nn

from advlens.models.blocks import BasicBlock

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet18(nn.Module):
    """ResNet-18 for 3×32×32 inputs; last conv stage 512×4×4, global average pool, linear head.

    Shape:
        input: (N, 3, 32, 32) normalized; output: logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.in_planes = 64
        self.layer1 = self._make_layer(64, stride=1)
        self.layer2 = self._make_layer(128, stride=2)
        self.layer3 = self._make_layer(256, stride=2)
        self.layer4 = self._make_layer(512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(self.in_planes, planes, stride), BasicBlock(planes, planes, 1)]
        self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.avgpool(out), 1))
