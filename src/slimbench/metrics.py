"""What the harness measures on every model (methods never report their own numbers)."""

from __future__ import annotations

import hashlib
import io
import math
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

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


def count_stored_params(model: nn.Module) -> int:
    """Learned numbers the model stores, in whatever form (the rows' ``params``): its float
    parameters, the packed weights and biases of quantized layers and the weights that weight-only
    quantization keeps as buffers. Equals ``models.count_nn_parameters`` for a float model."""
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


def _digest_value(digest: "hashlib._Hash", value: object) -> None:
    """Feed one state_dict value: tensors by dtype, shape and raw bytes (quantized ones by their
    integers and quantization parameters), containers item by item, anything else by repr."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            per_tensor = t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
            params = (t.q_scale(), t.q_zero_point()) if per_tensor else (t.q_per_channel_axis(),)
            digest.update(repr((str(t.dtype), params)).encode())
            for part in (t.int_repr(),) if per_tensor else (t.int_repr(), t.q_per_channel_scales(),
                                                           t.q_per_channel_zero_points()):
                _digest_value(digest, part)
            return
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _digest_value(digest, item)
    else:
        digest.update(repr(value).encode())


def model_md5(model: nn.Module) -> str:
    """md5 of the model's state_dict tensors in sorted key order: equal md5, identical weights.

    Unlike the md5 of a saved file, it does not depend on torch.save's archive layout."""
    digest = hashlib.md5()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        _digest_value(digest, value)
    return digest.hexdigest()


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


@dataclass
class PairedTiming:
    """Per-forward times (ms) of a reference and a case, one sample per turn, turns alternated."""

    reference_ms: list[float]
    case_ms: list[float]
    forwards_per_turn: int


@torch.inference_mode()
def paired_latency(reference: nn.Module, case: nn.Module, example: torch.Tensor, rounds: int = 30,
                   warmup: int = 5, min_turn_ms: float = 5.0) -> PairedTiming:
    """Time two models in alternating turns of back-to-back forwards.

    Alternating puts a slow stretch of a shared machine on both models, so their ratio holds.
    Each turn runs one model ``forwards_per_turn`` times in a row (enough for ``min_turn_ms``)
    and records the mean: a single forward right after the other model's pays for refilling
    caches with its own weights, which made the int8 speed-up at batch 1 read 1.10x against 1.18x
    in a steady loop (README, "How latency is measured"). Turns go ABBA so that neither model
    always runs second.
    """
    sync = torch.cuda.synchronize if example.is_cuda else (lambda: None)  # GPU kernels run asynchronously
    reference.eval()
    case.eval()

    def turn(model: nn.Module, forwards: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(forwards):
            model(example)
        sync()
        return (time.perf_counter() - start) * 1000.0 / forwards

    for _ in range(warmup):
        turn(reference, 1)
        turn(case, 1)
    fastest = min(turn(reference, 1), turn(case, 1))
    forwards = max(1, min(100, math.ceil(min_turn_ms / max(fastest, 1e-6))))
    timing = PairedTiming([], [], forwards)
    for i in range(rounds):
        order = ((reference, timing.reference_ms), (case, timing.case_ms))
        for model, bucket in order if i % 2 == 0 else order[::-1]:
            bucket.append(turn(model, forwards))
    return timing
