"""Structured pruning: channels physically removed (torch-pruning's dependency graph handles the
coupled layers), so the pruned model is smaller in params, MACs and, unlike masks, latency.

CIFAR ResNets with option-A shortcuts add a zero-padded, subsampled copy of the block input to
the block output; torch-pruning's graph cannot follow that padding, so the residual stream keeps
its width and only the inner channel of each block (conv1's output, conv2's input) is pruned,
as in Li et al. (2017), "Pruning Filters for Efficient ConvNets".
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
import torch_pruning as tp
from torch import nn

from ..budgets import Budget
from ..metrics import count_macs, count_params
from ..models.cifar_resnet import BasicBlock, CifarResNet
from ..training import fit, normalize
from .base import Context, Method, register
from .prune import finetune


MAX_RATIO = 0.9


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels must stay: the classifier, and the residual stream of CIFAR ResNets."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ignored: list[nn.Module] = linears[-1:]
    if isinstance(model, CifarResNet):
        ignored += [model.conv1] + [m.conv2 for m in model.modules() if isinstance(m, BasicBlock)]
    return ignored


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor,
                   importance: tp.importance.Importance, round_to: int | None = None) -> nn.Module:
    """Remove ``ratio`` of the prunable channels of every layer (in place; returns ``model``)."""
    if ratio <= 0:
        return model
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=ignored_layers(model), round_to=round_to)
    pruner.step()
    return model


def ratio_for_budget(fits: Callable[[float], bool], hi: float = MAX_RATIO, steps: int = 12) -> float | None:
    """Smallest channel ratio in [0, hi] whose pruned model fits (bisection); None if even ``hi`` fails.

    torch-pruning keeps some layers whole at ratios near 1 (and with round_to), so params are not
    monotone there: the search stops at 0.9."""
    if fits(0.0):
        return 0.0
    if not fits(hi):
        return None
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def budget_check(model: nn.Module, budget: Budget, example: torch.Tensor) -> Callable[[nn.Module], bool]:
    """Whether a pruned copy meets a params or MACs speed-up budget."""
    if budget.kind == "params":
        return lambda pruned: count_params(pruned) <= budget.value
    dense = count_macs(model, example)
    return lambda pruned: dense / count_macs(pruned, example) >= budget.value


def example_batch(ctx: Context) -> torch.Tensor:
    return normalize(ctx.data.train.images[:2], ctx.data.mean, ctx.data.std)


class ChannelPruner(Method):
    """Shared steps: size the channel ratio to the budget, remove the channels, fine-tune."""

    family = "prune"
    budget_kinds = ("params", "macs_speedup")

    def importance(self) -> tp.importance.Importance:
        raise NotImplementedError

    def prune_to_budget(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        example = example_batch(ctx)
        model.eval()
        meets = budget_check(model, budget, example)
        round_to = ctx.setting("round_to", None)

        def fits(ratio: float) -> bool:
            return meets(prune_channels(copy.deepcopy(model), ratio, example, self.importance(), round_to))

        ratio = ratio_for_budget(fits)
        fallback = MAX_RATIO if ratio is None else ratio  # over budget even then: budget_met=false
        ctx.log.update(channel_ratio=round(fallback, 4), fits_budget=ratio is not None)
        return prune_channels(model, fallback, example, self.importance(), round_to)


@register
class Structured(ChannelPruner):
    """Filters with the smallest L1 norm (per coupled group) removed to meet the budget, then fine-tuning."""

    name = "prune_structured"
    settings = {"finetune_epochs": 0, "round_to": None}

    def importance(self) -> tp.importance.Importance:
        return tp.importance.MagnitudeImportance(p=1)

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        model = self.prune_to_budget(model, budget, ctx)
        finetune(model, ctx, int(ctx.setting("finetune_epochs", 0)), self.name)
        return model


@register
class BNSlimming(ChannelPruner):
    """Network slimming (Liu et al., 2017): fine-tune with an L1 penalty on BatchNorm scales
    (``slimming_epochs``, weight ``l1``), remove the channels with the smallest scales to meet
    the budget, then fine-tune (``finetune_epochs``)."""

    name = "prune_bn_slimming"
    settings = {"l1": 1e-4, "slimming_epochs": 1, "finetune_epochs": 0, "round_to": None}

    def importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance()

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        scales = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
        weight = float(ctx.setting("l1", 1e-4))
        ce = torch.nn.functional.cross_entropy

        def loss(logits, x, y, idx):
            return ce(logits, y) + weight * sum(s.abs().sum() for s in scales)

        epochs = int(ctx.setting("slimming_epochs", 1))
        if epochs > 0:
            fit(model, ctx.data, dataclasses.replace(ctx.recipe, epochs=epochs), loss_fn=loss,
                desc=f"{self.name}-l1", resume_path=ctx.resume_path(f"{self.name}-l1"))
        model = self.prune_to_budget(model, budget, ctx)
        finetune(model, ctx, int(ctx.setting("finetune_epochs", 0)), self.name)
        return model
