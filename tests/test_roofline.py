"""The machine's roofline: GEMM peaks, and a row's GFLOP/s and fraction of the peak."""

import pytest

from slimbench import roofline


def test_gemm_peaks_are_measured():
    fp32 = roofline.gemm_peak_fp32(n=256, min_seconds=0.05)
    int8 = roofline.gemm_peak_int8(n=256, min_seconds=0.05)
    assert fp32 > 0.1  # GFLOP/s: any CPU of the last decade does far more
    assert int8 is None or int8 > 0.1


def test_machine_peaks_are_measured_once_per_thread_count():
    assert roofline.machine_peaks() is roofline.machine_peaks()
    assert roofline.machine_peaks()["gemm_size"] == roofline.GEMM_SIZE


def test_row_gflops_and_peak_fraction():
    peaks = {"gemm_gflops_fp32": 100.0, "gemm_gops_int8": 400.0}
    fp32 = roofline.row_fields(macs=40_000_000, latency_ms=2.0, batch=1, weight_bits=32, peaks=peaks)
    assert fp32 == {"gflops": 40.0, "peak_fraction": 0.4}  # 2 x 40 M MACs in 2 ms
    int8 = roofline.row_fields(40_000_000, 8.0, 64, 8, peaks, "_batch_inductor")
    assert int8 == {"gflops_batch_inductor": 640.0, "peak_fraction_batch_inductor": 1.6}  # against the int8 peak
    assert roofline.row_fields(40_000_000, 8.0, 64, 8, {"gemm_gflops_fp32": 100.0, "gemm_gops_int8": None})[
        "peak_fraction"] == pytest.approx(6.4)  # no int8 peak: read against fp32
    assert roofline.row_fields(40_000_000, None, 1, 32, peaks) == {"gflops": None, "peak_fraction": None}
