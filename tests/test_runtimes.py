"""Deployment runtimes on the digits CNN: outputs match eager, rows carry each runtime's latency,
speed-up and top-1, a failing runtime is a row note, and `runtimes:` is checked like every key."""

import pytest
import torch
import yaml
from conftest import mini_params, write_project

from slimbench import harness, runtimes
from slimbench.cases import expand_cases, load_tier, tier_problems
from slimbench.errors import ConfigError
from slimbench.training import normalize

ALL = ["eager", "inductor", "onnxruntime", "openvino"]


def _project(tmp_path, digits_model, runtimes_of_tier=None, cases=None):
    params = mini_params(cases or [{"method": "reference"},
                                   {"method": "prune_global_magnitude", "budget": {"sparsity": 0.5}}])
    if runtimes_of_tier is not None:
        params["tiers"]["mini"]["runtimes"] = runtimes_of_tier
    return write_project(tmp_path, params, digits_model)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_exported_runtimes_match_eager_at_any_batch(name, digits, digits_model):
    x = normalize(digits.test.images[:5], digits.mean, digits.std)
    forward = runtimes.RUNTIMES[name].prepare(digits_model, x[:1])
    with torch.inference_mode():
        expected = digits_model(x)
    assert torch.allclose(forward(x), expected, atol=1e-4)
    assert torch.allclose(forward(x[:1]), expected[:1], atol=1e-4)


def test_rows_carry_every_runtime_paired_with_the_reference(tmp_path, digits_model):
    """Inductor compiles four graphs here (case and reference, batch 1 and 8): about a minute."""
    project = _project(tmp_path, digits_model, ALL)
    case = expand_cases("mini", project)[1]
    tier = load_tier("mini", project)
    assert tier.runtimes == tuple(ALL)
    row = harness.measure(case, harness.compress_case(case, project), tier)
    assert row["runtime_errors"] is None and row["runtimes"] == ALL
    for name in ALL[1:]:
        assert row[f"latency_ms_{name}"] > 0 and row[f"latency_ms_batch_{name}"] > 0
        ratio = row[f"reference_latency_ms_{name}"] / row[f"latency_ms_{name}"]  # of medians rounded to 4 places
        assert row[f"speedup_{name}"] == pytest.approx(ratio, rel=2e-3, abs=2e-3)
        assert abs(row[f"top1_{name}"] - row["top1"]) <= 100 / row["test_size"]  # one image at most
        assert row[f"agreement_{name}"] >= 1 - 1 / row["test_size"] and row[f"max_abs_diff_{name}"] < 1e-3
        assert row["compile_seconds"][name] > 0 and row[f"gflops_batch_{name}"] > 0
    assert 0 < row["peak_fraction_batch"] and row["gflops"] == round(2 * row["macs"] / row["latency_ms"] * 1e-6, 2)
    assert row["environment"]["roofline"]["gemm_gflops_fp32"] > 0


def test_a_failing_runtime_is_a_row_note_not_a_crash(tmp_path, digits_model, monkeypatch):
    def broken(model, example):
        raise RuntimeError("exporter choked\nsecond line")

    monkeypatch.setitem(runtimes.RUNTIMES, "openvino", runtimes.Runtime("openvino", broken, exact=False))
    project = _project(tmp_path, digits_model, ["eager", "openvino", "onnxruntime"])
    case = expand_cases("mini", project)[0]
    row = harness.measure(case, harness.compress_case(case, project), load_tier("mini", project))
    assert row["runtime_errors"] == ["openvino: RuntimeError: exporter choked"]
    assert row["latency_ms_openvino"] is None and row["speedup_openvino"] is None and row["top1_openvino"] is None
    assert row["latency_ms_onnxruntime"] > 0 and row["latency_ms"] > 0  # the others are measured


def test_eager_only_tiers_measure_as_before(tmp_path, digits_model):
    project = _project(tmp_path, digits_model)
    case = expand_cases("mini", project)[0]
    row = harness.measure(case, harness.compress_case(case, project), load_tier("mini", project))
    assert "runtime_errors" not in row and "latency_ms_inductor" not in row and row["peak_fraction"] > 0


def test_runtimes_are_checked_with_a_suggestion(tmp_path, digits_model):
    project = _project(tmp_path, digits_model, ["eager", "onnxrt"],
                       cases=[{"method": "reference", "runtimes": ["eager", "openvno"]}, {"method": "reference",
                              "tag": "x", "runtimes": "inductor"}])
    problems = tier_problems("mini", project)
    assert "tiers.mini.runtimes: unknown runtime 'onnxrt'; fix: did you mean 'onnxruntime'? valid: eager, " \
           "inductor, onnxruntime, openvino" in problems
    assert any(p.startswith("tiers.mini.cases[0].runtimes: unknown runtime 'openvno'; fix: did you mean 'openvino'?")
               for p in problems)
    assert any(p.startswith("tiers.mini.cases[1].runtimes: must be a non-empty list") for p in problems)
    with pytest.raises(ConfigError, match="unknown runtime 'onnxrt'"):
        load_tier("mini", project)


def test_runtimes_do_not_change_a_cases_model_key(tmp_path, digits_model):
    project = _project(tmp_path, digits_model)
    before = expand_cases("mini", project)[1]
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tiers"]["mini"]["cases"][1]["runtimes"] = ["eager", "onnxruntime"]
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    after = expand_cases("mini", project)[1]
    assert after.runtimes == ("eager", "onnxruntime") and after.config_hash() == before.config_hash()


def _timed_row(case_id: str) -> dict:
    row = {"case_id": case_id, "dataset": "digits", "model": "fashion_cnn", "batch_size": 8, "top1": 96.1,
           "runtimes": ["eager", "inductor", "openvino"], "latency_ms": 2.0, "latency_ms_iqr": 0.1, "speedup": 1.0,
           "speedup_ci95": [0.9, 1.1], "latency_ms_batch": 4.0, "speedup_batch": 1.2, "gflops_batch": 5.0,
           "peak_fraction_batch": 0.05, "compile_seconds": {"inductor": 12.5, "openvino": 0.4},
           "runtime_errors": ["openvino: RuntimeError: no plugin"],
           "environment": {"roofline": {"gemm_gflops_fp32": 100.0, "gemm_gops_int8": 180.0, "threads": 2}}}
    return {**row, "latency_ms_inductor": 1.0, "speedup_inductor": 2.0, "speedup_inductor_ci95": [1.9, 2.1],
            "speedup_batch_inductor": 1.5, "top1_inductor": 96.4, "peak_fraction_batch_inductor": 0.25,
            "latency_ms_openvino": None, "speedup_openvino": None, "top1_openvino": None}


def test_runtime_table_has_a_line_per_runtime_with_its_numbers_and_errors():
    from slimbench.render import render_runtimes

    lines = render_runtimes([_timed_row("reference-digits-nobudget")]).splitlines()
    assert lines[0] == "GEMM peak on this machine: 100.00 GFLOP/s fp32, 180.00 GOP/s int8 (2 threads)."
    eager, inductor, openvino = (next(line for line in lines if f"| {name} " in line)
                                 for name in ("eager", "inductor", "openvino"))
    assert "| 96.10 " in eager and "1.00 [0.9, 1.10]" in eager and "| 5.0 " in eager
    assert "2.00 [1.90, 2.10]" in inductor and "| 96.40 " in inductor and "| 25.0 " in inductor and "12.50" in inductor
    assert "RuntimeError: no plugin" in openvino


def test_runtime_plot_is_written(tmp_path):
    from slimbench.plots import runtime_plots

    paths = runtime_plots([_timed_row("a-digits"), _timed_row("b-digits"), {"case_id": "c", "dataset": "digits"}],
                          tmp_path)
    assert [p.name for p in paths] == ["runtimes_digits.png"] and paths[0].stat().st_size > 10_000


def test_error_lines_are_one_telling_line():
    openvino = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/dev/plugin.cpp:54:\n"
                            "Check 'broadcast' failed at eltwise.hpp:26:\nWhile validating node 'Subtract_770'\n"
                            "Argument shapes are inconsistent.\n")
    assert runtimes.error_line("openvino", openvino) == ("openvino: RuntimeError: Argument shapes are inconsistent. "
                                                         "Check 'broadcast' failed at eltwise.hpp:26:")
    missing = runtimes.error_line("onnxruntime", ModuleNotFoundError("No module named 'onnxruntime'"))
    assert missing == ("onnxruntime: ModuleNotFoundError: No module named 'onnxruntime'; fix: pip install -e . "
                       "(it pins onnxruntime)")
