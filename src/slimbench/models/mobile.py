"""Depthwise-separable students: MobileNet-v1 style and the course's ResNet-like student."""

from __future__ import annotations

import torch
from torch import nn

from .layers import scaled

# (out_channels, stride) of the conv_dw blocks after conv_bn(3, 32, stride 2).
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1))
RESNET_LIKE_BLOCKS = ((64, 1), (128, 2), (256, 2), (141, 2))


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 and pointwise 1x1, both without bias, each followed by BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class DepthwiseNet(nn.Module):
    """A stem, a stack of conv_dw blocks, global average pooling and a linear classifier."""

    def __init__(self, stem: list[nn.Module], stem_channels: int, blocks: tuple[tuple[int, int], ...],
                 num_classes: int, width: float) -> None:
        super().__init__()
        layers, cin = list(stem), stem_channels
        for cout, stride in blocks:
            cout = scaled(cout, width)
            layers.append(conv_dw(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v1(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> DepthwiseNet:
    """conv_bn(3, 32, s2), conv_dw 32-64-128-128-256-256-512 x6, avg pool, Linear(512, n)."""
    c = scaled(32, width)
    stem = [nn.Sequential(nn.Conv2d(in_channels, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))]
    return DepthwiseNet(stem, c, MOBILENET_V1_BLOCKS, num_classes, width)


def resnet_like_student(num_classes: int = 11, in_channels: int = 3, width: float = 1.0) -> DepthwiseNet:
    """Conv7x7(s2)-BN-ReLU-MaxPool(3,2,1), four depthwise-separable blocks 64-64-128-256-141,
    avg pool, Linear(141, n): 99,060 parameters at 11 classes."""
    c = scaled(64, width)
    stem = [nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]
    return DepthwiseNet(stem, c, RESNET_LIKE_BLOCKS, num_classes, width)
