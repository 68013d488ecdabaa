"""Compact architectures: the case's network rebuilt with cheaper convolutions, sized to a budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from typing import Any

from torch import nn

from ..budgets import Budget
from ..metrics import count_stored_params
from ..training import fit
from .base import Context, Method, register
from .sizing import bisect_fit


MIN_WIDTH = 0.05


def width_for_budget(build: Callable[[float], nn.Module], max_params: float, lo: float = MIN_WIDTH,
                     hi: float = 8.0, steps: int = 30) -> float | None:
    """Largest width multiplier whose model has at most ``max_params`` parameters (bisection).

    Returns None when even the narrowest model is over budget.
    """
    return bisect_fit(lambda w: count_stored_params(build(w)) <= max_params, lo, hi, steps)


def _shapes(state: dict) -> dict:
    return {k: getattr(v, "shape", None) for k, v in state.items()}


@dataclass(frozen=True)
class GroupSettings:
    groups: int = 2  # groups of every grouped conv


class CompactConv(Method):
    """The case's model rebuilt with ``conv`` convolutions, widest that fits the params budget,
    trained from scratch with cross-entropy. Over budget even at the narrowest width, the
    narrowest model is trained and its row says budget_met=false."""

    family = "arch"
    budget_kinds = ("params",)
    conv: str

    def infeasible(self, given: nn.Module, budget: Budget, ctx: Context) -> str | None:
        kwargs = self.conv_kwargs(ctx)
        smallest = count_stored_params(ctx.build_model(width=MIN_WIDTH, **kwargs))
        if budget.kind == "params" and smallest > budget.value:
            return f"the smallest width ({MIN_WIDTH}) has {smallest:,} params"
        return None

    def conv_kwargs(self, ctx: Context) -> dict:
        return {"conv": self.conv, **({"groups": int(ctx.setting("groups"))} if self.conv == "group" else {})}

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        kwargs = self.conv_kwargs(ctx)
        width = width_for_budget(lambda w: ctx.build_model(width=w, **kwargs), budget.value)
        ctx.log.update(width=round(width or MIN_WIDTH, 4), fits_budget=width is not None)
        student = ctx.build_model(width=width or MIN_WIDTH, **kwargs)
        result = fit(student, ctx.data, ctx.recipe, desc=self.name, resume_path=ctx.resume_path(self.name))
        ctx.log.update(best_epoch=result.best_epoch)
        return student

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """The student at the logged width (rounded to 4 decimals) if its tensor shapes are the
        state's, else at the width the budget search gives again."""
        kwargs = self.conv_kwargs(ctx)
        if "width" in ctx.log:
            student = ctx.build_model(width=float(ctx.log["width"]), **kwargs)
            if _shapes(student.state_dict()) == _shapes(state):
                return student
        width = width_for_budget(lambda w: ctx.build_model(width=w, **kwargs), budget.value)
        return ctx.build_model(width=width or MIN_WIDTH, **kwargs)


@register
class StandardConv(CompactConv):
    """Dense convolutions, only the width scaled to the budget: the reference point of the family."""

    name = "arch_standard"
    conv = "standard"


@register
class DepthwiseSeparable(CompactConv):
    """Depthwise 3x3 + pointwise 1x1 in place of every dense conv after the stem."""

    name = "arch_dwsep"
    conv = "dwsep"


@register
class GroupConv(CompactConv):
    """Grouped convolutions (``groups`` setting) in place of every dense conv after the stem."""

    name = "arch_group"
    conv = "group"
    settings_type = GroupSettings

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        return f"{self.name} ({settings['groups']} groups)"
