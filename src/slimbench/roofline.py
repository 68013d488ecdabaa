"""The machine's roofline: the arithmetic peak a model's throughput is read against.

Measured once per process (``machine_peaks``) with the thread count in force: fp32 from a large
``torch.mm``, int8 from a large quantized Linear (the int8 GEMM torch's CPU int8 paths use).
A row's ``gflops`` is 2 x MACs / latency and ``peak_fraction`` that over the peak of the row's
arithmetic (int8 for int8 models, else fp32).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import torch

GEMM_SIZE = 1024  # n x n x n: compute-bound (2.1 GFLOP a product), short enough to take the best of many
MIN_SECONDS = 1.0  # per kind, after a warm-up product: the best product catches a moment the other core is free


def _best_gflops(product, flops: float, min_seconds: float) -> float:
    """Best GFLOP/s over repeated calls of ``product`` for at least ``min_seconds`` (peak, not typical)."""
    product()
    best, spent = float("inf"), 0.0
    while spent < min_seconds or best == float("inf"):
        start = time.perf_counter()
        product()
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
    return flops / best / 1e9


def gemm_peak_fp32(n: int = GEMM_SIZE, min_seconds: float = MIN_SECONDS) -> float:
    """GFLOP/s of an n x n fp32 matrix product (2 n^3 flops)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        return _best_gflops(lambda: torch.mm(a, b), 2.0 * n ** 3, min_seconds)


def gemm_peak_int8(n: int = GEMM_SIZE, min_seconds: float = MIN_SECONDS) -> float | None:
    """GOP/s of an n x n int8 product through torch's quantized Linear (x86 engine: fbgemm's u8 x s8
    GEMM with int32 accumulation), or None where this build has no quantized CPU engine.
    ``torch._int_mm`` is not used: on CPU in torch 2.14.1 it is a reference loop (0.8 GOP/s at
    n = 256, docs/runtimes.md)."""
    import warnings

    if "x86" not in torch.backends.quantized.supported_engines:
        return None
    previous, torch.backends.quantized.engine = torch.backends.quantized.engine, "x86"
    try:
        with warnings.catch_warnings():  # quantized tensor constructors announce their deprecation
            warnings.simplefilter("ignore")
            linear = torch.ao.nn.quantized.Linear(n, n)
            linear.set_weight_bias(torch.quantize_per_tensor(torch.randn(n, n) * 0.05, 1e-3, 0, torch.qint8), None)
            x = torch.quantize_per_tensor(torch.rand(n, n), 1 / 255, 0, torch.quint8)
        with torch.inference_mode():
            return _best_gflops(lambda: linear(x), 2.0 * n ** 3, min_seconds)
    except RuntimeError:
        return None
    finally:
        torch.backends.quantized.engine = previous


@lru_cache(maxsize=None)
def _peaks(threads: int) -> dict[str, Any]:
    fp32, int8 = gemm_peak_fp32(), gemm_peak_int8()
    return {"gemm_gflops_fp32": round(fp32, 1), "gemm_gops_int8": None if int8 is None else round(int8, 1),
            "gemm_size": GEMM_SIZE, "int8_kernel": "torch.ao quantized Linear (x86)", "threads": threads}


def machine_peaks() -> dict[str, Any]:
    """The peaks at this process's thread count, measured on first use (about a second)."""
    return _peaks(torch.get_num_threads())


def row_fields(macs: int, latency_ms: float | None, batch: int, weight_bits: int, peaks: dict[str, Any],
               suffix: str = "") -> dict[str, Any]:
    """``gflops{suffix}`` (2 x MACs of one image x ``batch`` / latency of one forward) and
    ``peak_fraction{suffix}`` against the peak of the model's arithmetic (int8 where weights are
    8-bit and the int8 peak is known, else fp32)."""
    if not latency_ms or not macs:
        return {f"gflops{suffix}": None, f"peak_fraction{suffix}": None}
    gflops = 2.0 * macs * batch / (latency_ms / 1000.0) / 1e9
    peak = peaks.get("gemm_gops_int8") if weight_bits == 8 and peaks.get("gemm_gops_int8") else peaks["gemm_gflops_fp32"]
    return {f"gflops{suffix}": round(gflops, 2), f"peak_fraction{suffix}": round(gflops / peak, 4)}
