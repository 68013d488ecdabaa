"""Depthwise-separable students: MobileNet-v1 style and the course's ResNet-like student."""

from __future__ import annotations

import torch
from torch import nn

from .layers import scaled

# (out_channels, stride) of the conv_dw blocks after conv_bn(3, 32, stride 2).
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1))


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 and pointwise 1x1, both without bias, each followed by BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """conv_bn(3, 32, s2), conv_dw 32-64-128-128-256-256-512 x6, avg pool, Linear(512, n)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        cin = scaled(32, width)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, cin, 3, 2, 1, bias=False),
                                                 nn.BatchNorm2d(cin), nn.ReLU(inplace=True))]
        for cout, stride in MOBILENET_V1_BLOCKS:
            cout = scaled(cout, width)
            layers.append(conv_dw(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class ResNetLikeStudent(nn.Module):
    """Conv7x7(s2)-BN-ReLU-MaxPool(3,2,1), four depthwise-separable blocks 64-64-128-256-141,
    avg pool, Linear(141, n): 99,060 parameters at 11 classes."""

    STAGES = ((64, 1), (128, 2), (256, 2), (141, 2))

    def __init__(self, num_classes: int = 11, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        cin = scaled(64, width)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, cin, 7, 2, 3, bias=False), nn.BatchNorm2d(cin),
                                   nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        for cout, stride in self.STAGES:
            cout = scaled(cout, width)
            layers.append(conv_dw(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
