"""Quantization.

Static int8 PTQ uses torch.ao.quantization's FX graph mode with the x86 (fbgemm/oneDNN) backend.
torchao's PT2E flow is the maintained successor, but on CPU its q/dq graphs only run as fast
int8 kernels after torch.compile/inductor lowering; FX graph mode in torch 2.14 still converts
to real quantized modules that run int8 kernels eagerly, which is what latency should measure.
"""

from __future__ import annotations

import itertools
import warnings

import torch
from torch import nn
from torch.ao.quantization import QConfig, QConfigMapping, observer
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from ..budgets import Budget
from ..errors import ConfigError
from ..training import iterate
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


@torch.inference_mode()
def calibrate(prepared: nn.Module, ctx: Context, size: int) -> None:
    """Run ``size`` training images (a seeded sample, no augmentation) through the observers."""
    gen = torch.Generator().manual_seed(ctx.seed)
    batches = iterate(ctx.data.train, ctx.data, 256, shuffle=True, gen=gen)
    seen = 0
    for x, _, _ in itertools.takewhile(lambda _: seen < size, batches):
        x = x[: size - seen]
        prepared(x)
        seen += len(x)


@register
class PTQInt8(Method):
    """Static W8A8 post-training quantization: conv-BN fusion, observers, int8 kernels on CPU."""

    name = "quant_ptq_int8"
    family = "quant"
    budget_kinds = ("bits", "bytes")
    settings = {"observer": "histogram", "calibration_size": 1000}
    # torch.ao's quantized modules do not survive pickling (ConvReLU2d fails in __setstate__);
    # calibration takes seconds, so the harness recomputes instead of caching.
    cacheable = False

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        torch.backends.quantized.engine = BACKEND
        model.eval()
        example = (ctx.data.train.images[:1].float(),)
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            prepared = prepare_fx(model, qconfig_mapping(ctx.setting("observer", "histogram")), example)
            calibrate(prepared, ctx, int(ctx.setting("calibration_size", 1000)))
            return convert_fx(prepared)
