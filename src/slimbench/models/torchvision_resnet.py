"""torchvision ResNet-18/50 adapted to small inputs (3x3 stem, stride 1, no max-pool)."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50


def small_input_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The CIFAR adaptation used across the literature: keep 32x32 resolution through the stem."""
    model = {18: resnet18, 50: resnet50}[depth](weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model
