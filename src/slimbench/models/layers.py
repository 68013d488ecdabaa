"""Building blocks shared by the zoo. One conv factory with a switch, not a copy per variant."""

from __future__ import annotations

from torch import nn

CONV_KINDS = ("standard", "dwsep", "group")


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def conv_block(cin: int, cout: int, *, kind: str = "standard", groups: int = 1, stride: int = 1,
               kernel: int = 3, bias: bool = True, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Conv-BN-act in one of three forms.

    ``standard``: one dense kxk conv. ``group``: the same with ``groups`` groups.
    ``dwsep``: depthwise kxk conv-BN-act followed by a pointwise 1x1 conv (with bias), the
    form of the course's depthwise-separable CNN.
    """
    pad = kernel // 2
    if kind == "standard":
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, bias=bias), nn.BatchNorm2d(cout), act())
    if kind == "group":
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=bias),
                             nn.BatchNorm2d(cout), act())
    if kind == "dwsep":
        return nn.Sequential(nn.Conv2d(cin, cin, kernel, stride, pad, groups=cin, bias=bias), nn.BatchNorm2d(cin),
                             act(), nn.Conv2d(cin, cout, 1, bias=bias))
    raise ValueError(f"unknown conv kind {kind!r}; valid kinds: {', '.join(CONV_KINDS)}")


def channel_divisor(kind: str, groups: int) -> int:
    """Channel counts must divide evenly into groups for grouped convs."""
    return groups if kind == "group" else 1
