"""Compact architectures: the case's network rebuilt with cheaper convolutions, sized to a budget."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..budgets import Budget
from ..metrics import count_params
from ..training import fit
from .base import Context, Method, register


def width_for_budget(build: Callable[[float], nn.Module], max_params: float, lo: float = 0.05,
                     hi: float = 8.0, steps: int = 30) -> float | None:
    """Largest width multiplier whose model has at most ``max_params`` parameters (bisection).

    Returns None when even the narrowest model is over budget.
    """
    if count_params(build(lo)) > max_params:
        return None
    if count_params(build(hi)) <= max_params:
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count_params(build(mid)) <= max_params else (lo, mid)
    return lo


@register
class DepthwiseSeparable(Method):
    """Depthwise-separable variant of the case's model, widest that fits the params budget,
    trained from scratch with cross-entropy."""

    name = "arch_dwsep"
    family = "arch"
    budget_kinds = ("params",)
    conv = "dwsep"

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        width = width_for_budget(lambda w: ctx.build_model(conv=self.conv, width=w), budget.value)
        if width is None:  # report budget_met=false with the narrowest model instead of crashing
            width = 0.05
        ctx.log.update(width=round(width, 4))
        student = ctx.build_model(conv=self.conv, width=width)
        result = fit(student, ctx.data, ctx.recipe, desc=self.name)
        ctx.log.update(best_epoch=result.best_epoch)
        return student
