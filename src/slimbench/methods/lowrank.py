"""Low-rank factorization: truncated SVD of conv/linear weights, rank chosen to meet a params budget.

A conv W[out, in, k, k] is read as a matrix [out, in*k*k] = U S V^T and replaced by a k x k conv
with ``rank`` filters (sqrt(S) V^T) followed by a 1x1 conv back to ``out`` channels (U sqrt(S),
with the original bias). A linear layer becomes two linear layers the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..budgets import Budget
from ..metrics import count_stored_params
from ..training import fit
from .base import Context, Method, register
from .sizing import bisect_fit

FACTORABLE = (nn.Conv2d, nn.Linear)


def matrix_shape(layer: nn.Module) -> tuple[int, int]:
    """(rows, cols) of the weight read as a matrix."""
    w = layer.weight
    return w.shape[0], w[0].numel()


def full_rank(layer: nn.Module) -> int:
    return min(matrix_shape(layer))


def factor_params(layer: nn.Module, rank: int) -> int:
    rows, cols = matrix_shape(layer)
    return rank * (rows + cols) + (rows if layer.bias is not None else 0)


def factorize_layer(layer: nn.Conv2d | nn.Linear, rank: int) -> nn.Sequential:
    """The two-layer truncated-SVD replacement of ``layer`` (exact at full rank)."""
    rows, _ = matrix_shape(layer)
    u, s, vh = torch.linalg.svd(layer.weight.detach().reshape(rows, -1).double(), full_matrices=False)
    root = s[:rank].sqrt()
    first_w = (root[:, None] * vh[:rank]).float()
    second_w = (u[:, :rank] * root[None, :]).float()
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        first.weight.data.copy_(first_w)
        second.weight.data.copy_(second_w)
    else:
        first = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, bias=False, padding_mode=layer.padding_mode)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.data.copy_(first_w.reshape(rank, *layer.weight.shape[1:]))
        second.weight.data.copy_(second_w.reshape(rows, rank, 1, 1))
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def candidate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Dense (ungrouped) conv and linear layers by module path."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, FACTORABLE) and getattr(m, "groups", 1) == 1}


def ranks_for_fraction(model: nn.Module, fraction: float) -> dict[str, int]:
    """rank = ceil(fraction * full rank) per layer, kept only where the factor pair is smaller."""
    ranks = {}
    for name, layer in candidate_layers(model).items():
        rank = max(1, math.ceil(fraction * full_rank(layer)))
        if factor_params(layer, rank) < layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel()):
            ranks[name] = rank
    return ranks


def factorize(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace each named layer by its factor pair in place; returns ``model``."""
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factorize_layer(getattr(parent, child), rank))
    return model


def ranks_in_state(model: nn.Module, state: dict) -> dict[str, int]:
    """The ranks of the layers of ``model`` that a factorized model's state_dict holds as factor pairs."""
    return {name: state[f"{name}.0.weight"].shape[0] for name in candidate_layers(model)
            if f"{name}.weight" not in state and f"{name}.0.weight" in state}


def params_after(model: nn.Module, ranks: dict[str, int]) -> int:
    layers = candidate_layers(model)
    saved = sum(count_stored_params(layers[n]) - factor_params(layers[n], r) for n, r in ranks.items())
    return count_stored_params(model) - saved


def fraction_for_budget(model: nn.Module, max_params: float, steps: int = 30) -> float | None:
    """Largest rank fraction whose factorized model has at most ``max_params`` params (bisection;
    full rank is never tried, so the answer stays below 1)."""
    return bisect_fit(lambda f: params_after(model, ranks_for_fraction(model, f)) <= max_params, 0.0, 1.0, steps,
                      far_probe="never")


@dataclasses.dataclass(frozen=True)
class LowRankSettings:
    finetune_epochs: int | None = None  # None: the case recipe's epochs


@register
class LowRankSVD(Method):
    """Truncated SVD of every dense conv/linear layer at one rank fraction sized to the params budget,
    then fine-tuning with cross-entropy (``finetune_epochs``, default the case recipe's epochs)."""

    name = "lowrank_svd"
    family = "lowrank"
    budget_kinds = ("params",)
    settings_type = LowRankSettings

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        epochs = settings["finetune_epochs"]
        return self.name if epochs is None else f"{self.name} ({epochs} ep fine-tune)"

    def infeasible(self, given: nn.Module, budget: Budget, ctx: Context) -> str | None:
        lowest = params_after(given, ranks_for_fraction(given, 0.0))
        if budget.kind == "params" and lowest > budget.value:
            return f"the lowest ranks (1 per factorized layer) leave {lowest:,} params"
        return None

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        fraction = fraction_for_budget(model, budget.value)
        ranks = ranks_for_fraction(model, fraction if fraction is not None else 0.0)
        factorize(model, ranks)
        ctx.log.update(rank_fraction=round(fraction or 0.0, 4), fits_budget=fraction is not None,
                       factorized_layers=len(ranks))
        epochs = ctx.setting("finetune_epochs")
        recipe = ctx.recipe if epochs is None else dataclasses.replace(ctx.recipe, epochs=int(epochs))
        if recipe.epochs > 0:
            result = fit(model, ctx.data, recipe, desc=self.name, resume_path=ctx.resume_path(self.name))
            ctx.log.update(best_epoch=result.best_epoch)
        return model

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """The input with each layer the state holds as a factor pair (``<layer>.0.weight`` in place
        of ``<layer>.weight``) factorized at the rank of that first factor's output."""
        return factorize(model, ranks_in_state(model, state))
