"""Quantization.

Static int8 PTQ uses torch.ao.quantization's FX graph mode with the x86 (fbgemm/oneDNN) backend.
torchao's PT2E flow is the maintained successor, but on CPU its q/dq graphs only run as fast
int8 kernels after torch.compile/inductor lowering; FX graph mode in torch 2.14 still converts
to real quantized modules that run int8 kernels eagerly, which is what latency should measure.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import QConfig, QConfigMapping, get_default_qat_qconfig_mapping, observer
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from ..budgets import Budget
from ..errors import ConfigError
from ..training import fit, iterate, normalize
from .base import Context, Method, register

BACKEND = "x86"
# uint8 activations in 0..127 (7 bits): the x86 kernels' int16 accumulation can overflow otherwise.
_ACT = dict(dtype=torch.quint8, quant_min=0, quant_max=127)
ACTIVATION_OBSERVERS = {
    "minmax": observer.MinMaxObserver.with_args(**_ACT),
    "moving_average": observer.MovingAverageMinMaxObserver.with_args(**_ACT),
    "histogram": observer.HistogramObserver.with_args(**_ACT),
}
WEIGHT_OBSERVER = observer.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)


def qconfig_mapping(observer_name: str) -> QConfigMapping:
    if observer_name not in ACTIVATION_OBSERVERS:
        raise ConfigError(f"unknown observer {observer_name!r}; valid: {', '.join(ACTIVATION_OBSERVERS)}")
    return QConfigMapping().set_global(QConfig(activation=ACTIVATION_OBSERVERS[observer_name], weight=WEIGHT_OBSERVER))


def calibration_size(ctx: Context) -> int:
    """The ``calibration_size`` setting (a number of training images, or "all"), capped at the
    train split's size and logged in the row as ``calibration_images``."""
    size = ctx.setting("calibration_size")
    if size != "all" and not (isinstance(size, int) and size >= 1):
        raise ConfigError(f"calibration_size must be a number of images (at least 1) or \"all\", got {size!r}; "
                          "fix the case's settings")
    size = len(ctx.data.train) if size == "all" else min(size, len(ctx.data.train))
    ctx.log["calibration_images"] = size
    return size


def calibration_batches(ctx: Context, size: int) -> Iterator[torch.Tensor]:
    """``size`` training images, a seeded sample without augmentation (every PTQ method's sample)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    seen = 0
    for x, _, _ in itertools.takewhile(lambda _: seen < size, iterate(ctx.data.train, ctx.data, 256,
                                                                       shuffle=True, gen=gen)):
        x = x[: size - seen]
        seen += len(x)
        yield x


@torch.inference_mode()
def calibrate(prepared: nn.Module, ctx: Context, size: int) -> None:
    """Run ``size`` training images through the observers."""
    for x in calibration_batches(ctx, size):
        prepared(x)


@torch.no_grad()
def observe_one_batch(prepared: nn.Module, ctx: Context, size: int = 8) -> None:
    """Run a few training images through the observers of a model being rebuilt (``structure``):
    conversion then finds qparams to build its modules with, which the saved state replaces."""
    prepared(normalize(ctx.data.train.images[:size], ctx.data.mean, ctx.data.std))


@dataclass(frozen=True)
class PTQSettings:
    observer: str = "histogram"  # activation observer: one of ACTIVATION_OBSERVERS
    calibration_size: int | str = 1000  # training images, or "all"


@dataclass(frozen=True)
class QATSettings:
    epochs: int = 1  # fake-quant fine-tuning epochs


@register
class PTQInt8(Method):
    """Static W8A8 post-training quantization: conv-BN fusion, observers, int8 kernels on CPU."""

    name = "quant_ptq_int8"
    family = "quant"
    plots = ("calibration_curves",)
    budget_kinds = ("bits", "bytes")
    settings_type = PTQSettings
    stored_bits = 8

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        return f"{self.name} ({settings['observer']})"


    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        return self.convert(model, ctx, lambda prepared: calibrate(prepared, ctx, calibration_size(ctx)))

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """Prepared and converted like compress, observers fed one small batch: the same graph and
        quantized modules, whose weights and qparams the state then sets (converted modules
        cannot be pickled, and a pickled GraphModule would run its generated code on load)."""
        return self.convert(model, ctx, lambda prepared: observe_one_batch(prepared, ctx))

    def convert(self, model: nn.Module, ctx: Context, observe: Callable[[nn.Module], object]) -> nn.Module:
        torch.backends.quantized.engine = BACKEND
        model.eval()
        example = (ctx.data.train.images[:1].float(),)
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            prepared = prepare_fx(model, qconfig_mapping(ctx.setting("observer")), example)
            observe(prepared)
            return convert_fx(prepared)


@register
class QAT(Method):
    """Quantization-aware training: fake-quant (x86 defaults: per-channel int8 weights, uint8
    activations in 0..127) inserted by prepare_qat_fx, ``epochs`` of fine-tuning at the case's
    recipe (BN still updating), then conversion to int8 kernels like quant_ptq_int8."""

    name = "quant_qat"
    family = "quant"
    budget_kinds = ("bits", "bytes")
    settings_type = QATSettings
    stored_bits = 8

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        return f"{self.name} ({settings['epochs']} ep)"


    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        def train(prepared: nn.Module) -> None:
            result = fit(prepared, ctx.data, dataclasses.replace(ctx.recipe, epochs=int(ctx.setting("epochs"))),
                         desc=self.name)
            ctx.log.update(best_epoch=result.best_epoch, qat_val_top1=round(result.best_val_top1, 2))

        return self.convert(model, ctx, train)

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """Prepared for QAT and converted like compress, fake-quant fed one small batch instead of
        training (see quant_ptq_int8)."""
        return self.convert(model, ctx, lambda prepared: observe_one_batch(prepared, ctx))

    def convert(self, model: nn.Module, ctx: Context, train: Callable[[nn.Module], object]) -> nn.Module:
        torch.backends.quantized.engine = BACKEND
        example = (ctx.data.train.images[:1].float(),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(BACKEND), example)
            train(prepared)
            return convert_fx(prepared.eval())


@register
class KDThenInt8(PTQInt8):
    """The course pipeline: a distilled student (the case's ``from_case``, a distill-family case)
    quantized by static int8 PTQ; its budget is usually a file size in bytes."""

    name = "pipeline_kd_quant"
    family = "pipeline"
    plots = ()
    upstream_family = "distill"
