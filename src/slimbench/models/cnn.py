"""The course CNNs: the 8-conv VGG-style network and the 3-conv Fashion-MNIST CNN, each with
standard / depthwise-separable / group convolutions and a width multiplier."""

from __future__ import annotations

import torch
from torch import nn

from .layers import channel_divisor, conv_block, scaled

VGG8_CHANNELS = (16, 32, 64, 128, 256, 256, 256, 256)


class VGG8(nn.Module):
    """Conv3x3-BN-ReLU-MaxPool x8, adaptive avg pool, Linear.

    ``conv="standard"`` is the course's 2,168,203-parameter CNN. ``conv="dwsep"`` is its
    depthwise+pointwise version: a standard stem, then seven depthwise-separable blocks with
    ReLU6, max-pooling after the stem and the first three blocks only (256,779 parameters).
    Pools use ceil_mode so inputs smaller than 2^8 pixels still run.
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 3, width: float = 1.0,
                 conv: str = "standard", groups: int = 1) -> None:
        super().__init__()
        div = channel_divisor(conv, groups)
        chans = [scaled(c, width, div) for c in VGG8_CHANNELS]
        act = nn.ReLU6 if conv == "dwsep" else nn.ReLU
        layers: list[nn.Module] = [*conv_block(in_channels, chans[0], act=act), nn.MaxPool2d(2, ceil_mode=True)]
        for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
            layers += conv_block(cin, cout, kind=conv, groups=groups, act=act)
            if conv != "dwsep" or i < 3:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(chans[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class FashionCNN(nn.Module):
    """Three 3x3 convs (32 channels) with BN, two 2x2 max-pools, Linear(32*7*7, 48), Linear(48, 10).

    95,386 parameters with the default 3-channel input at 28x28.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 conv: str = "standard", groups: int = 1, image_size: int = 28) -> None:
        super().__init__()
        c = scaled(32, width, channel_divisor(conv, groups))
        hidden = scaled(48, width)
        self.features = nn.Sequential(
            *conv_block(in_channels, c), nn.MaxPool2d(2),  # the stem sees few channels: keep it dense
            *conv_block(c, c, kind=conv, groups=groups), nn.MaxPool2d(2),
            *conv_block(c, c, kind=conv, groups=groups),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
