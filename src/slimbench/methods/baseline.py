"""Baselines: the uncompressed reference as is, and a model trained from scratch without a teacher."""

from __future__ import annotations

from torch import nn

from ..budgets import Budget
from ..training import fit
from .base import Context, Method, register


@register
class Reference(Method):
    """The case's reference model unchanged (teachers and dense models as leaderboard rows)."""

    name = "reference"
    family = "baseline"
    budget_kinds = ("none",)
    is_reference = True

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        return model


@register
class Scratch(Method):
    """The given architecture trained from scratch with cross-entropy: the no-teacher baseline."""

    name = "scratch"
    family = "baseline"
    budget_kinds = ("none", "params")
    keeps_architecture = True

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        result = fit(model, ctx.data, ctx.recipe, desc=self.name, resume_path=ctx.resume_path(self.name))
        ctx.log.update(best_epoch=result.best_epoch)
        return model
