"""Unstructured pruning: per-layer L1, one global threshold, and iterative prune -> fine-tune.

Masks (torch.nn.utils.prune) stay attached while fine-tuning, so pruned weights stay zero, and
are folded into plain weights before the model is returned and measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..budgets import Budget
from ..errors import ConfigError
from ..fileio import atomic_torch_save
from ..training import finetune
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


def schedule_targets(target: float, rounds: int, schedule: str) -> list[float]:
    """Cumulative sparsity after each round: linear, or cubic (Zhu & Gupta, 2017: fast early, slow late)."""
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if schedule == "linear":
        return [target * r / rounds for r in range(1, rounds + 1)]
    if schedule == "cubic":
        return [target * (1 - (1 - r / rounds) ** 3) for r in range(1, rounds + 1)]
    raise ConfigError(f"unknown schedule {schedule!r}; valid: linear, cubic")


@dataclass(frozen=True)
class FinetuneSettings:
    finetune_epochs: int = 0  # masked fine-tuning after pruning; 0: one-shot


@dataclass(frozen=True)
class IterativeSettings:
    rounds: int = 4
    finetune_epochs: int = 1  # per round
    schedule: str = "cubic"  # per-round targets: linear or cubic
    final_epochs: int = 0  # fine-tuning at the target after the last round


class MaskPruner(Method):
    """Masks from ``apply_masks``, then optional masked fine-tuning, then masks made permanent."""

    family = "prune"
    plots = ("rate_curves",)
    budget_kinds = ("sparsity",)
    settings_type = FinetuneSettings
    row_metrics = ("per_layer",)

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        epochs = settings["finetune_epochs"]
        return f"{self.name} ({'one-shot' if not epochs else f'{epochs} ep fine-tune'})"

    def apply_masks(self, model: nn.Module, rate: float) -> None:
        raise NotImplementedError

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        self.apply_masks(model, float(budget.value))
        finetune(model, ctx, int(ctx.setting("finetune_epochs")), self.name)
        return make_permanent(model)


@register
class LayerL1(MaskPruner):
    """The same L1 pruning rate in every conv/linear layer."""

    name = "prune_l1_layer"

    def apply_masks(self, model: nn.Module, rate: float) -> None:
        for module, name in prunable_parameters(model):
            prune.l1_unstructured(module, name, amount=rate)


@register
class GlobalMagnitude(MaskPruner):
    """One global L1 threshold over all conv/linear weights."""

    name = "prune_global_magnitude"

    def apply_masks(self, model: nn.Module, rate: float) -> None:
        prune.global_unstructured(prunable_parameters(model), pruning_method=prune.L1Unstructured, amount=rate)


@register
class Iterative(Method):
    """Reach the target sparsity in ``rounds`` rounds of global magnitude pruning, each followed by
    ``finetune_epochs`` of masked fine-tuning (per-round targets follow ``schedule``), then
    ``final_epochs`` of fine-tuning at the target. Each finished round is saved, so an interrupted
    case resumes at its last unfinished round."""

    name = "prune_iterative"
    family = "prune"
    plots = ("rate_curves",)
    budget_kinds = ("sparsity",)
    settings_type = IterativeSettings
    row_metrics = ("per_layer",)

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        """A ``chain``-tagged case starts from the previous rate's model (``from_case``)."""
        epochs, final = settings["finetune_epochs"], settings["final_epochs"]
        if tag == "chain":
            return f"{self.name} (from the previous rate, {epochs} ep each)"
        return f"{self.name} ({settings['rounds']} rounds x {epochs} ep" + (f" + {final} ep)" if final else ")")

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        targets = schedule_targets(float(budget.value), int(ctx.setting("rounds")), str(ctx.setting("schedule")))
        start = self.resume_rounds(model, ctx, len(targets))
        done = targets[start - 1] if start else 0.0
        for i, target in enumerate(targets[start:], start + 1):
            # torch's pruning containers apply `amount` to the weights still unpruned; scores are the
            # current (masked) weights, made contiguous again after channels-last fine-tuning
            params = prunable_parameters(model)
            scores = {(m, n): getattr(m, n).detach().contiguous() for m, n in params}
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                                      amount=(target - done) / (1 - done), importance_scores=scores)
            done = target
            finetune(model, ctx, int(ctx.setting("finetune_epochs")), f"{self.name}-round{i}")
            self.save_round(model, ctx, i)
        finetune(model, ctx, int(ctx.setting("final_epochs")), f"{self.name}-final")
        ctx.log.update(round_targets=[round(t, 4) for t in targets])
        return make_permanent(model)

    def round_path(self, ctx: Context, i: int) -> Path | None:
        return ctx.resume_path(f"{self.name}-round{i}-done")

    def save_round(self, model: nn.Module, ctx: Context, i: int) -> None:
        path = self.round_path(ctx, i)
        if path is not None:
            atomic_torch_save(path, {"model": model.state_dict(), "log": dict(ctx.log)})

    def resume_rounds(self, model: nn.Module, ctx: Context, rounds: int) -> int:
        """Load the last finished round's masked model (in place); returns how many rounds are done."""
        for i in range(rounds, 0, -1):
            path = self.round_path(ctx, i)
            if path is not None and path.is_file():
                blob = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
                for module, name in prunable_parameters(model):
                    prune.identity(module, name)  # mask buffers for the saved masks to load into
                model.load_state_dict(blob["model"])
                ctx.log.update(blob["log"])
                return i
        return 0
