"""Quantization: qparams against hand-computed values, round trips, observers, exact integer
simulation, weight-only storage, and agreement with float and library models."""

import io
from functools import partial

import pytest
import torch
from torch import nn

from conftest import ctx_for
from slimbench import metrics
from slimbench.budgets import Budget
from slimbench.errors import BudgetError, ConfigError
from slimbench.methods import METHODS
from slimbench.methods.quant_manual import IntLayer, QParams, RangeObserver, affine_qparams
from slimbench.methods.quant_weight import dequantize_per_channel, quantize_per_channel
from slimbench.models import get_model
from slimbench.training import evaluate


ctx_for = partial(ctx_for, lr=0.01)  # quantization-aware training at 0.01


def test_affine_qparams_against_hand_computed_values():
    # range [-1, 3] over 0..255: scale = 4 / 255 = 0.0156863, zero_point = round(1 / scale) = round(63.75) = 64
    p = affine_qparams(-1.0, 3.0)
    assert p.scale == pytest.approx(0.0156863, abs=1e-7) and p.zero_point == 64
    # alpha 0.5 shrinks the range to [-0.5, 1.5]: scale = 2 / 255, zero_point = round(63.75) = 64
    p = affine_qparams(-1.0, 3.0, alpha=0.5)
    assert p.scale == pytest.approx(2 / 255) and p.zero_point == 64
    # all-positive ranges are widened to include 0 (zero_point 0); 0..127 halves the levels
    p = affine_qparams(0.5, 2.54, qmax=127)
    assert p.scale == pytest.approx(0.02) and p.zero_point == 0


def test_activation_round_trip_error_is_at_most_half_a_step():
    x = torch.linspace(-1.0, 3.0, 10_001)
    p = affine_qparams(-1.0, 3.0)
    q = p.quantize(x)
    assert q.min() >= 0 and q.max() <= 255 and torch.equal(q, q.round())
    assert (p.dequantize(q) - x).abs().max() <= p.scale / 2 + 1e-6
    assert p.dequantize(p.quantize(torch.zeros(1))).item() == 0.0  # zero is exact


def test_per_channel_weight_round_trip_error_is_at_most_half_a_step():
    w = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1)
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert scale == pytest.approx(w.abs().flatten(1).amax(1) / 127)  # one symmetric scale per channel
    error = (dequantize_per_channel(q, scale) - w).abs().flatten(1).amax(1)
    assert torch.all(error <= scale / 2 + 1e-6)


def test_range_observer_on_known_tensors():
    observer = RangeObserver()
    observer(torch.tensor([0.5, 2.0]))
    observer(torch.tensor([[-3.0, 1.0]]))
    assert (observer.low, observer.high) == (-3.0, 2.0)


def test_integer_layer_accumulates_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 8, 3, padding=1, bias=True)  # fan-in 576: 255 * 127 * 576 exceeds float32's 2**24
    layer = IntLayer(conv, QParams(1.0, 0, 255), relu=False)
    x = torch.randint(-255, 256, (1, 64, 5, 5)).double()
    x[0, :, 2, 2] = 255.0  # push one output towards the largest sums
    expected = torch.nn.functional.conv2d(x, layer.qweight.double(), padding=1)  # float64: exact here
    assert torch.equal(layer.accumulate(x), expected)


def test_manual_ptq_agrees_with_the_library_and_the_float_model(digits, digits_model):
    lib = METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8),
                                        ctx_for(digits, observer="minmax", calibration_size=256))
    manual = METHODS.get("quant_ptq_manual")(digits_model, Budget("bits", 8),
                                             ctx_for(digits, calibration_size=256, activation_qmax=127))
    x = torch.cat([digits.test.images[:200].float()])
    from slimbench.training import normalize
    x = normalize(x, digits.mean, digits.std)
    with torch.inference_mode():
        agree_lib = (manual(x).argmax(1) == lib(x).argmax(1)).float().mean().item()
        agree_float = (manual(x).argmax(1) == digits_model(x).argmax(1)).float().mean().item()
    assert agree_lib >= 0.95 and agree_float >= 0.9
    assert metrics.weight_bits(manual) == 8 and metrics.count_stored_params(manual) > 0
    assert metrics.count_macs(manual, x[:1]) == metrics.count_macs(digits_model, x[:1])


def test_manual_ptq_searches_alpha_on_validation(digits, digits_model):
    ctx = ctx_for(digits, calibration_size=128, alphas=[0.9, 1.0])
    model = METHODS.get("quant_ptq_manual")(digits_model, Budget("bits", 8), ctx)
    per_alpha = ctx.log["val_top1_per_alpha"]
    assert set(per_alpha) == {"0.9", "1"} and per_alpha[f"{ctx.log['alpha']:g}"] == max(per_alpha.values())
    assert evaluate(model, digits.val, digits) == pytest.approx(max(per_alpha.values()), abs=0.01)
    with pytest.raises(ConfigError, match="alphas in \\(0, 1\\]"):
        METHODS.get("quant_ptq_manual")(digits_model, Budget("bits", 8), ctx_for(digits, alphas=[1.5]))


@pytest.mark.parametrize("name,bits,ratio", [("quant_weight_int8", 8, 0.35), ("quant_weight_fp16", 16, 0.6)])
def test_weight_only_quantization_shrinks_the_saved_file_and_survives_reload(name, bits, ratio):
    model = get_model("cifar_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    small = METHODS.get(name)(model, Budget("bytes", 300_000), ctx_for(None))
    assert metrics.weight_bits(small) == bits
    assert metrics.size_bytes(small) < ratio * metrics.size_bytes(model)
    assert metrics.count_macs(small, x[:1]) == metrics.count_macs(model, x[:1])
    with torch.inference_mode():
        assert (small(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    buffer = io.BytesIO()
    torch.save(small, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    with torch.inference_mode():
        assert torch.equal(again(x), small(x))
    with pytest.raises(BudgetError, match="over the budget of 4 bits"):
        METHODS.get(name)(model, Budget("bits", 4), ctx_for(None))


def test_qat_gives_an_int8_model_that_still_predicts(digits, digits_model):
    ctx = ctx_for(digits, epochs=1)
    quantized = METHODS.get("quant_qat")(digits_model, Budget("bits", 8), ctx)
    assert metrics.weight_bits(quantized) == 8
    assert evaluate(quantized, digits.test, digits) > evaluate(digits_model, digits.test, digits) - 5
