"""Structured pruning: channels physically removed (torch-pruning's dependency graph handles the
coupled layers), so the pruned model is smaller in params, MACs and, unlike masks, latency.

CIFAR ResNets with option-A shortcuts add a zero-padded, subsampled copy of the block input to
the block output; torch-pruning's graph cannot follow that padding, so the residual stream keeps
its width and only the inner channel of each block (conv1's output, conv2's input) is pruned,
as in Li et al. (2017), "Pruning Filters for Efficient ConvNets".

Fine-tuning may distil the dense model into the pruned one (``distill_alpha``, ``distill_temperature``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..budgets import Budget
from ..metrics import count_macs, count_stored_params
from ..models.cifar_resnet import BasicBlock, CifarResNet
from ..training import finetune, fit, normalize
from .base import Context, Method, register
from .prune import DistillSettings, dense_distillation
from .sizing import bisect_fit


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
    return bisect_fit(fits, hi, 0.0, steps, far_probe="first")


def budget_check(model: nn.Module, budget: Budget, example: torch.Tensor) -> Callable[[nn.Module], bool]:
    """Whether a pruned copy meets a params or MACs speed-up budget (``Budget.is_met`` on the one
    measurement the budget reads)."""
    if budget.kind == "params":
        return lambda pruned: budget.is_met({"params": count_stored_params(pruned)})
    dense = count_macs(model, example)
    return lambda pruned: budget.is_met({"reference_macs": dense, "macs": count_macs(pruned, example)})


def example_batch(ctx: Context) -> torch.Tensor:
    return normalize(ctx.data.train.images[:2], ctx.data.mean, ctx.data.std)


def resize_to_state(model: nn.Module, state: dict) -> nn.Module:
    """Give ``model``'s conv, linear and BatchNorm layers the channel counts of ``state``'s tensors
    (what torch-pruning changes: a depthwise conv keeps groups == channels); in place, values
    left uninitialised for the state to fill. Any other layer whose shapes differ raises."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        own = {**module._parameters, **module._buffers}
        changed = [k for k, v in own.items() if v is not None and prefix + k in state
                   and tuple(state[prefix + k].shape) != tuple(v.shape)]
        if not changed:
            continue
        if isinstance(module, nn.Conv2d):
            out_channels, per_group = state[prefix + "weight"].shape[:2]
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            module.groups = out_channels if depthwise else module.groups
            module.out_channels, module.in_channels = out_channels, per_group * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = state[prefix + "weight"].shape
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = state[prefix + changed[0]].shape[0]  # every BN tensor is per channel
        else:
            raise ValueError(f"cannot resize {type(module).__name__} {name!r} to the saved shapes of {changed}")
        for k in changed:
            fresh = torch.empty(state[prefix + k].shape, dtype=own[k].dtype)
            if k in module._parameters:
                module._parameters[k] = nn.Parameter(fresh, requires_grad=own[k].requires_grad)
            else:
                module._buffers[k] = fresh
    return model


@dataclasses.dataclass(frozen=True)
class StructuredSettings(DistillSettings):
    finetune_epochs: int = 0
    round_to: int | None = None  # keep channel counts multiples of this (torch-pruning's round_to)


@dataclasses.dataclass(frozen=True)
class SlimmingSettings(StructuredSettings):
    l1: float = 1e-4  # weight of the L1 penalty on BatchNorm scales
    slimming_epochs: int = 1  # epochs trained with that penalty before pruning


class ChannelPruner(Method):
    """Shared steps: size the channel ratio to the budget, remove the channels, fine-tune."""

    family = "prune"
    budget_kinds = ("params", "macs_speedup")
    settings_type = StructuredSettings
    row_metrics = ("per_layer",)

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        epochs = settings["finetune_epochs"]
        return f"{self.name} ({'one-shot' if not epochs else f'{epochs} ep fine-tune'})"

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """The input with the channel counts of the saved (pruned) tensors."""
        return resize_to_state(model, state)

    def importance(self) -> tp.importance.Importance:
        raise NotImplementedError

    def infeasible(self, given: nn.Module, budget: Budget, ctx: Context) -> str | None:
        """ratio_for_budget's end points: the model as given, and MAX_RATIO of its channels removed
        (a uniform ratio per layer, so the count does not depend on which channels go)."""
        example = example_batch(ctx)[:1]
        meets = budget_check(given.eval(), budget, example)
        if meets(given):
            return None
        pruned = prune_channels(copy.deepcopy(given), MAX_RATIO, example, self.importance(),
                                ctx.setting("round_to"))
        if meets(pruned):
            return None
        most = f"removing {MAX_RATIO:.0%} of the prunable channels (the most it removes)"
        if budget.kind == "params":
            return f"{most} leaves {count_stored_params(pruned):,} params"
        return f"{most} gives a MACs speed-up of {count_macs(given, example) / count_macs(pruned, example):.2f}x"

    def prune_to_budget(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        example = example_batch(ctx)
        model.eval()
        meets = budget_check(model, budget, example)
        round_to = ctx.setting("round_to")

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

    def importance(self) -> tp.importance.Importance:
        return tp.importance.MagnitudeImportance(p=1)

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        loss = dense_distillation(model, ctx)  # before pruning: the dense model
        model = self.prune_to_budget(model, budget, ctx)
        finetune(model, ctx, int(ctx.setting("finetune_epochs")), self.name, loss_fn=loss)
        return model


@register
class BNSlimming(ChannelPruner):
    """Network slimming (Liu et al., 2017): fine-tune with an L1 penalty on BatchNorm scales
    (``slimming_epochs``, weight ``l1``), remove the channels with the smallest scales to meet
    the budget, then fine-tune (``finetune_epochs``)."""

    name = "prune_bn_slimming"
    settings_type = SlimmingSettings

    def importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance()

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        scales = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
        weight = float(ctx.setting("l1"))
        ce = torch.nn.functional.cross_entropy

        def loss(logits, x, y, idx):
            return ce(logits, y) + weight * sum(s.abs().sum() for s in scales)

        epochs = int(ctx.setting("slimming_epochs"))
        if epochs > 0:
            fit(model, ctx.data, dataclasses.replace(ctx.recipe, epochs=epochs), loss_fn=loss,
                desc=f"{self.name}-l1", resume_path=ctx.resume_path(f"{self.name}-l1"))
        distilled = dense_distillation(model, ctx)  # the slimmed model, before its channels go
        model = self.prune_to_budget(model, budget, ctx)
        finetune(model, ctx, int(ctx.setting("finetune_epochs")), self.name, loss_fn=distilled)
        return model
