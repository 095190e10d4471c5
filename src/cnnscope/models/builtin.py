"""Small CNNs trained inside the pipeline on the synthetic world.

Sized for CPU training in a couple of minutes on 64 px images (see the shape/texture notes: a
5-conv BN network with a stride-2 first conv and global average pooling learns shapes in ~1000 steps).
Layer names are plain (``conv1`` .. ``conv5``; ``layer1`` .. ``layer3`` like torchvision's ResNet) so a
study config can address them by dotted name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """Five conv-BN-ReLU blocks (conv1 stride 2, max-pool after conv2 and conv4), GAP and a linear head."""

    def __init__(self, num_classes: int = 16, width: int = 24) -> None:
        super().__init__()
        w = [width, width * 2, width * 2, width * 4, width * 4]
        self.conv1 = _conv_bn(3, w[0], stride=2)
        self.conv2 = _conv_bn(w[0], w[1])
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _conv_bn(w[1], w[2])
        self.conv4 = _conv_bn(w[2], w[3])
        self.pool4 = nn.MaxPool2d(2)
        self.conv5 = _conv_bn(w[3], w[4])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.conv1(x)))
        x = self.pool4(self.conv4(self.conv3(x)))
        x = self.conv5(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class BasicBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs and an identity or 1x1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class TinyResNet(nn.Module):
    """A three-stage ResNet (one basic block per stage) with torchvision-style names."""

    def __init__(self, num_classes: int = 16, width: int = 24) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, width * 2, 2)
        self.layer3 = BasicBlock(width * 2, width * 4, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


BUILTIN: dict[str, Callable[..., nn.Module]] = {"convnet": ConvNet, "tinyresnet": TinyResNet}
