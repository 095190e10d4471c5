"""Small CNNs trained inside the pipeline on the synthetic world.

Sized for CPU training in a couple of minutes on 64 px images (see the shape/texture notes: a
5-conv BN network with a stride-2 first conv and global average pooling learns shapes in ~1000 steps).
Layer names are plain (``conv1`` .. ``conv5``; ``layer1`` .. ``layer3`` like torchvision's ResNet) so a
study config can address them by dotted name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnscope.errors import ModelError


def _conv_bn(cin: int, cout: int, stride: int = 1, batch_norm: bool = True) -> nn.Sequential:
    """3x3 conv, batch normalisation and ReLU; without batch normalisation the conv has a bias."""
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm)
    norm = [nn.BatchNorm2d(cout)] if batch_norm else []
    return nn.Sequential(conv, *norm, nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Five conv-BN-ReLU blocks (conv1 stride 2, max-pool after conv2 and conv4), GAP and a linear head.

    ``dropout`` (the rate before the classifier) and ``batch_norm`` are the training conditions of
    Bau et al. 2017's comparison (§4.2, Fig. 9: dropout and batch normalisation change how many units
    become detectors). With the defaults the module, its parameters and its random initialisation are
    the same as before these options existed (no dropout module at rate 0)."""

    def __init__(
        self, num_classes: int = 16, width: int = 24, dropout: float = 0.0, batch_norm: bool = True
    ) -> None:
        super().__init__()
        w = [width, width * 2, width * 2, width * 4, width * 4]
        self.conv1 = _conv_bn(3, w[0], stride=2, batch_norm=batch_norm)
        self.conv2 = _conv_bn(w[0], w[1], batch_norm=batch_norm)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _conv_bn(w[1], w[2], batch_norm=batch_norm)
        self.conv4 = _conv_bn(w[2], w[3], batch_norm=batch_norm)
        self.pool4 = nn.MaxPool2d(2)
        self.conv5 = _conv_bn(w[3], w[4], batch_norm=batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(w[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.conv1(x)))
        x = self.pool4(self.conv4(self.conv3(x)))
        x = self.conv5(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


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
CONDITIONED = ("convnet",)  # the built-in architectures that take dropout and batch_norm


@dataclass
class BuiltinNet:
    """A built-in network as the model config gives it: ``arch``, ``width`` and the training
    conditions ``dropout`` and ``batch_norm`` (convnet only), and the seed of its initialisation."""

    arch: str = "convnet"
    width: int = 24
    dropout: float = 0.0
    batch_norm: bool = True
    init_seed: int = 0

    def build(self, **kwargs: int) -> nn.Module:
        """The network with the torch generator's current random initialisation (``kwargs``: e.g.
        ``num_classes``); dropout or batch_norm off on an architecture without them is refused."""
        conditions = {"dropout": self.dropout, "batch_norm": self.batch_norm}
        if self.arch not in CONDITIONED:
            if self.dropout or not self.batch_norm:
                raise ModelError(
                    f"dropout and batch_norm are settings of the built-in {' and '.join(CONDITIONED)}, "
                    f"not of {self.arch}; leave them at 0.0 and true"
                )
            conditions = {}
        return BUILTIN[self.arch](width=self.width, **conditions, **kwargs)
