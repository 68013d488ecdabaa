"""Weight-only quantization for size budgets: weights stored as float16, or as int8 with one
symmetric scale per output channel; activations and arithmetic stay float32.

BatchNorm is folded into the preceding convolution first (torch.fx's ``fuse`` traces the model
to find conv -> BN pairs): fewer tensors to store, and the scales then cover the folded weights. The saved state_dict holds the low-precision weights;
the float32 weight used by forward is rebuilt ("dequantized on load") and is not saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from ..budgets import Budget
from ..errors import BudgetError
from .base import Context, Method, register

QUANTIZABLE = (nn.Conv2d, nn.Linear)


def quantize_per_channel(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization: (int8 values, float32 scales), w ~ q * scale."""
    qmax = 2 ** (bits - 1) - 1
    amax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (amax / qmax).float()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q = torch.clamp(torch.round(weight / scale.view(shape)), -qmax, qmax).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.view((-1,) + (1,) * (q.dim() - 1))


class WeightOnly(nn.Module):
    """A conv/linear layer whose weight is stored in ``storage`` precision ("int8" or "float16")."""

    def __init__(self, layer: nn.Module, storage: str) -> None:
        super().__init__()
        weight = layer.weight.detach()
        del layer.weight  # the float weight becomes a derived, unsaved buffer
        layer.register_buffer("weight", weight.clone(), persistent=False)
        self.layer, self.storage = layer, storage
        if storage == "int8":
            q, scale = quantize_per_channel(weight)
            self.register_buffer("qweight", q)
            self.register_buffer("scale", scale)
        else:
            self.register_buffer("qweight", weight.half())
        self.register_load_state_dict_post_hook(_dequantize_after_load)
        self.dequantize()

    @torch.no_grad()
    def dequantize(self) -> None:
        """Rebuild the float32 weight forward uses from the stored one."""
        w = dequantize_per_channel(self.qweight, self.scale) if self.storage == "int8" else self.qweight.float()
        self.layer.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _dequantize_after_load(module: WeightOnly, incompatible_keys) -> None:
    module.dequantize()


def wrap_weights(model: nn.Module, storage: str) -> nn.Module:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QUANTIZABLE):
                setattr(parent, name, WeightOnly(child, storage))
    return model


@dataclass(frozen=True)
class WeightOnlySettings:
    fold_bn: bool = True  # fold BatchNorm into the preceding conv before storing the weights


class WeightOnlyQuant(Method):
    family = "quant"
    budget_kinds = ("bits", "bytes")
    settings_type = WeightOnlySettings
    storage: str
    bits: int

    @property
    def stored_bits(self) -> int:  # type: ignore[override]  (Method.stored_bits, from the subclass's bits)
        return self.bits

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        if budget.kind == "bits" and budget.value < self.bits:
            raise BudgetError(f"{self.name} stores {self.bits}-bit weights, over the budget of {budget.value:g} "
                              f"bits; fix: use a budget of bits: {self.bits} or more, or a lower-precision method")
        return self.structure(model, {}, budget, ctx)

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """BN folded (the traced GraphModule ``fuse`` returns, built here, never unpickled), then
        the WeightOnly wrappers; compress's own steps, which hold no training."""
        if ctx.setting("fold_bn"):
            model = fuse(model.eval())
        return wrap_weights(model, self.storage).eval()


@register
class WeightFP16(WeightOnlyQuant):
    """float16 weight storage (half the float32 size), float32 compute."""

    name = "quant_weight_fp16"
    storage, bits = "float16", 16


@register
class WeightInt8(WeightOnlyQuant):
    """Per-channel symmetric int8 weight storage (about a quarter of float32), float32 compute."""

    name = "quant_weight_int8"
    storage, bits = "int8", 8
