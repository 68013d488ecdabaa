"""What the harness measures on every model (methods never report their own numbers)."""

from __future__ import annotations

import io
import statistics
import time
import zlib
from collections.abc import Iterator

import torch
from torch import nn


def _stored(module: nn.Module, name: str) -> torch.Tensor | None:
    """A module's ``weight``/``bias`` as stored; torch.ao quantized modules expose them as methods."""
    value = getattr(module, name, None)
    value = value() if callable(value) else value
    return value.detach() if isinstance(value, torch.Tensor) else None


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """Float view of a conv/linear weight, for float and quantized modules alike."""
    weight = _stored(module, "weight")
    return weight.dequantize() if weight is not None and weight.is_quantized else weight


def _is_conv(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("in_channels", "out_channels", "kernel_size", "groups"))


def _is_linear(m: nn.Module) -> bool:
    return hasattr(m, "in_features") and hasattr(m, "out_features")


def prunable_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(module name, weight) of every conv and linear layer, quantized ones dequantized."""
    for name, module in model.named_modules():
        if (_is_conv(module) or _is_linear(module)) and (w := _weight_of(module)) is not None:
            yield name, w


def _all_weights(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every learnable tensor: float parameters, the packed weights/biases of quantized layers, and
    conv/linear weights held as buffers (weight-only quantization stores them elsewhere)."""
    yield from (p.detach() for p in model.parameters())
    for module in model.modules():
        if callable(getattr(module, "weight", None)):
            yield _weight_of(module)
            if (b := _stored(module, "bias")) is not None:
                yield b
        elif _weight_is_derived(module):
            yield module.weight.detach()


def _weight_is_derived(module: nn.Module) -> bool:
    """A conv/linear whose weight is an unsaved buffer rebuilt from a stored low-precision copy."""
    return (_is_conv(module) or _is_linear(module)) and "weight" in getattr(module, "_buffers", {})


def count_params(model: nn.Module) -> int:
    return sum(t.numel() for t in _all_weights(model))


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for t in _all_weights(model))


def sparsity(model: nn.Module) -> float:
    """Zero fraction of the prunable (conv/linear) weights, 0..1."""
    total = zeros = 0
    for _, w in prunable_weights(model):
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def per_layer_sparsity(model: nn.Module) -> dict[str, float]:
    return {name: float((w == 0).float().mean()) for name, w in prunable_weights(model)}


def weight_bits(model: nn.Module) -> int:
    """Widest storage type among the conv/linear weights (32 for float32, 8 for int8...); a
    weight-only quantized layer's stored copy is its ``qweight`` buffer."""
    bits = 0
    for module in model.modules():
        stored = getattr(module, "_buffers", {}).get("qweight")
        if stored is None and (_is_conv(module) or _is_linear(module)) and not _weight_is_derived(module):
            stored = _stored(module, "weight")
        if stored is not None:
            bits = max(bits, stored.element_size() * 8)
    return bits


def serialized_bytes(model: nn.Module) -> bytes:
    """The deployable artefact: the model's state_dict as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def size_bytes(model: nn.Module) -> int:
    return len(serialized_bytes(model))


def zipped_size_bytes(model: nn.Module) -> int:
    """Size of the saved state_dict after DEFLATE (zlib level 9): what zeros buy on disk."""
    return len(zlib.compress(serialized_bytes(model), 9))


def per_layer_params(before: nn.Module, after: nn.Module) -> list[dict]:
    """Per conv/linear layer: non-zero weights before and after compression, and the difference.

    Layers are matched by module path; a layer the compressed model no longer has counts 0 after.
    """
    after_weights = dict(prunable_weights(after))
    rows = []
    for name, w in prunable_weights(before):
        kept = int(torch.count_nonzero(after_weights[name])) if name in after_weights else 0
        rows.append({"module": name, "before": int(torch.count_nonzero(w)), "after": kept,
                     "difference": kept - int(torch.count_nonzero(w))})
    return rows


@torch.inference_mode()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of conv and linear layers for one forward of ``example`` (batch 1).

    Forward hooks on leaf conv/linear modules, so quantized modules count too; a unit test
    checks the result equals torch.utils.flop_counter's FLOPs / 2 on float models.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        out = output.dequantize() if output.is_quantized else output
        if _is_conv(module):
            k = torch.tensor(module.kernel_size).prod().item()
            total += out.numel() // out.shape[0] * (module.in_channels // module.groups) * k
        else:
            total += out.numel() // out.shape[0] * module.in_features

    layers = [m for m in model.modules() if _is_conv(m) or _is_linear(m)]
    # Count innermost layers only (a wrapper holding a conv/linear must not count twice); quantized
    # Linear holds a packed-params child, so "has no children" would wrongly skip it.
    inner = [m for m in layers if not any(c is not m and (_is_conv(c) or _is_linear(c)) for c in m.modules())]
    handles = [m.register_forward_hook(hook) for m in inner]
    try:
        model.eval()
        model(example)
    finally:
        for h in handles:
            h.remove()
    return int(total)


@torch.inference_mode()
def paired_latency_ms(first: nn.Module, second: nn.Module, example: torch.Tensor, rounds: int = 30,
                      warmup: int = 5) -> tuple[float, float]:
    """Median forward times of two models, alternating them round by round so that a slow
    stretch of a shared machine falls on both; their ratio is what a speed-up should use."""
    first.eval()
    second.eval()
    for _ in range(warmup):
        first(example)
        second(example)
    times: tuple[list[float], list[float]] = ([], [])
    sync = torch.cuda.synchronize if example.is_cuda else (lambda: None)  # GPU kernels run asynchronously
    for _ in range(rounds):
        for model, bucket in ((first, times[0]), (second, times[1])):
            sync()
            start = time.perf_counter()
            model(example)
            sync()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000.0, statistics.median(times[1]) * 1000.0
