"""Pruning."""

from __future__ import annotations

import dataclasses

from torch import nn
from torch.nn.utils import prune

from ..budgets import Budget
from ..training import fit
from .base import Context, Method, register

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold pruning masks into the weights so the deployable model has plain parameters."""
    for module, name in prunable_parameters(model):
        if prune.is_pruned(module):
            prune.remove(module, name)
    return model


@register
class GlobalMagnitude(Method):
    """One global L1 threshold over all conv/linear weights, then optional masked fine-tuning."""

    name = "prune_global_magnitude"
    family = "prune"
    budget_kinds = ("sparsity",)
    settings = {"finetune_epochs": 0}

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        prune.global_unstructured(prunable_parameters(model), pruning_method=prune.L1Unstructured,
                                  amount=float(budget.value))
        epochs = int(ctx.setting("finetune_epochs", 0))
        if epochs > 0:  # masks stay attached during fine-tuning, so pruned weights stay zero
            result = fit(model, ctx.data, dataclasses.replace(ctx.recipe, epochs=epochs), desc=self.name,
                         resume_path=ctx.resume_path(self.name))
            ctx.log.update(best_epoch=result.best_epoch)
        return make_permanent(model)
