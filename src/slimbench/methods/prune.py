"""Unstructured pruning: per-layer L1, one global threshold, and iterative prune -> fine-tune.

Masks (torch.nn.utils.prune) stay attached while fine-tuning, so pruned weights stay zero, and
are folded into plain weights before the model is returned and measured.

Two levers of ``prune_iterative`` (off by default): fine-tuning distilled from the dense model
(``distill_alpha``, ``distill_temperature``; shared with the channel pruners) and a first round
that masks whole conv filters by the |gamma| of their BatchNorm (``bn_filter_fraction``).
"""

from __future__ import annotations

import copy
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
from ..training import LossFn, device, finetune
from .base import Context, Method, register
from .distill import TeacherSignal, kd_logits_loss

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


def _check_fraction(name: str, value: float, top: float) -> None:
    if not 0.0 <= value <= top:
        raise ConfigError(f"setting {name} must lie in [0, {top:g}], got {value!r}; fix the case's settings")


@dataclass(frozen=True)
class DistillSettings:
    """Fine-tuning against the dense model's softened logits (``kd_logits_loss``); alpha 0: plain cross-entropy."""

    distill_alpha: float = 0.0
    distill_temperature: float = 4.0

    def __post_init__(self) -> None:
        _check_fraction("distill_alpha", self.distill_alpha, 1.0)
        if self.distill_temperature <= 0:
            raise ConfigError(f"setting distill_temperature must be positive, got {self.distill_temperature!r}; "
                              "fix the case's settings")


def dense_distillation(dense: nn.Module, ctx: Context) -> LossFn | None:
    """The fine-tuning loss that distils ``dense`` (the model before pruning) into the pruned one, or
    None (cross-entropy) at ``distill_alpha: 0``. Without augmentation its logits are computed once."""
    alpha, temperature = float(ctx.setting("distill_alpha")), float(ctx.setting("distill_temperature"))
    if alpha == 0.0:
        return None
    signal = TeacherSignal(copy.deepcopy(dense).to(device()), ctx, cache_logits=True)
    return lambda logits, x, y, idx: kd_logits_loss(logits, signal.logits(x, idx), y, temperature, alpha)


@dataclass(frozen=True)
class IterativeSettings(DistillSettings):
    rounds: int = 4
    finetune_epochs: int = 1  # per round
    schedule: str = "cubic"  # per-round targets: linear or cubic
    final_epochs: int = 0  # fine-tuning at the target after the last round
    bn_filter_fraction: float = 0.0  # round 0: this fraction of conv filters masked by BN |gamma|; 0: none

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("bn_filter_fraction", self.bn_filter_fraction, 0.9)


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each conv directly followed (in registration order) by a BatchNorm of its output channels."""
    modules = list(model.modules())
    return [(conv, bn) for conv, bn in zip(modules, modules[1:]) if isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.num_features == conv.out_channels]


def mask_filters_by_bn_gamma(model: nn.Module, fraction: float) -> int:
    """Mask the ``fraction`` of conv filters (one global ranking over ``conv_bn_pairs``) whose BN
    |gamma| is smallest, keeping each layer's largest; the BN's beta then feeds on as a constant.
    Returns the number of filters masked."""
    pairs = conv_bn_pairs(model)
    if not pairs:
        raise ConfigError("bn_filter_fraction needs convs followed by BatchNorm; fix: set it to 0 for this model")
    gammas = torch.cat([bn.weight.detach().abs().flatten() for _, bn in pairs])
    k = int(fraction * len(gammas))
    if k == 0:
        return 0
    threshold = gammas.kthvalue(k).values
    masked = 0
    for conv, bn in pairs:
        keep = bn.weight.detach().abs() > threshold
        keep[bn.weight.detach().abs().argmax()] = True
        prune.custom_from_mask(conv, "weight", keep.view(-1, 1, 1, 1).expand_as(conv.weight).float())
        masked += int((~keep).sum())
    return masked


def mask_sparsity(model: nn.Module) -> float:
    """Fraction of conv/linear weights that the attached masks zero."""
    params = prunable_parameters(model)
    zeros = sum(int((m.weight_mask == 0).sum()) for m, _ in params if prune.is_pruned(m))
    return zeros / sum(getattr(m, n).numel() for m, n in params)


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
    case resumes at its last unfinished round. With ``bn_filter_fraction``, round 0 masks filters by
    BN |gamma| (and is fine-tuned) first; the rounds then prune from the sparsity it reached,
    skipping targets already passed. With ``distill_alpha``, fine-tuning distils the dense model."""

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
        filters = float(ctx.setting("bn_filter_fraction"))
        loss = dense_distillation(model, ctx)  # before any mask: the dense model
        start = self.resume_rounds(model, ctx, len(targets), first=0 if filters else 1)
        if filters and start < 0:
            ctx.log.update(bn_filters_masked=mask_filters_by_bn_gamma(model, filters))
            finetune(model, ctx, int(ctx.setting("finetune_epochs")), f"{self.name}-round0", loss_fn=loss)
            start = 0
            self.save_round(model, ctx, 0)
        start = max(start, 0)
        # with a filter round the sparsity reached is measured; else it is the schedule's (bit for bit as before)
        done = mask_sparsity(model) if filters else (targets[start - 1] if start else 0.0)
        for i, target in enumerate(targets[start:], start + 1):
            if filters and target <= done:
                continue  # the filter round already passed this target
            # torch's pruning containers apply `amount` to the weights still unpruned; scores are the
            # current (masked) weights, made contiguous again after channels-last fine-tuning
            params = prunable_parameters(model)
            scores = {(m, n): getattr(m, n).detach().contiguous() for m, n in params}
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                                      amount=(target - done) / (1 - done), importance_scores=scores)
            done = target
            finetune(model, ctx, int(ctx.setting("finetune_epochs")), f"{self.name}-round{i}", loss_fn=loss)
            self.save_round(model, ctx, i)
        finetune(model, ctx, int(ctx.setting("final_epochs")), f"{self.name}-final", loss_fn=loss)
        ctx.log.update(round_targets=[round(t, 4) for t in targets])
        return make_permanent(model)

    def round_path(self, ctx: Context, i: int) -> Path | None:
        return ctx.resume_path(f"{self.name}-round{i}-done")

    def save_round(self, model: nn.Module, ctx: Context, i: int) -> None:
        path = self.round_path(ctx, i)
        if path is not None:
            atomic_torch_save(path, {"model": model.state_dict(), "log": dict(ctx.log)})

    def resume_rounds(self, model: nn.Module, ctx: Context, rounds: int, first: int = 1) -> int:
        """Load the last finished round's masked model (in place); returns its number (rounds
        ``first``..``rounds`` are looked for; round 0 is the filter round), or ``first - 1`` if none."""
        for i in range(rounds, first - 1, -1):
            path = self.round_path(ctx, i)
            if path is not None and path.is_file():
                blob = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
                for path, module in model.named_modules():  # mask buffers for the saved masks to load into
                    if isinstance(module, PRUNABLE) and f"{path}.weight_mask" in blob["model"]:
                        prune.identity(module, "weight")  # (round 0 masks the convs only)
                model.load_state_dict(blob["model"])
                ctx.log.update(blob["log"])
                return i
        return first - 1
