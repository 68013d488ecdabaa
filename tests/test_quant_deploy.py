"""The deployment int8 methods on the digits CNN: torchao PT2E (lowered by inductor) and ONNX
Runtime's static QDQ, against the float model and through the case cache and the harness."""

import torch
from conftest import ctx_for, mini_params, write_project

from slimbench import harness, metrics, runtimes
from slimbench.budgets import Budget
from slimbench.cases import expand_cases, load_tier
from slimbench.methods import METHODS
from slimbench.methods.quant_deploy import OnnxModel
from slimbench.training import normalize

INT8 = Budget.from_config({"bits": 8})


def _top1(forward, data) -> float:
    with torch.inference_mode():
        out = forward(normalize(data.test.images, data.mean, data.std))
    return 100.0 * (out.argmax(1) == data.test.labels).float().mean().item()


def test_pt2e_int8_keeps_accuracy_stores_int8_and_runs_under_inductor(digits, digits_model):
    model = METHODS.get("quant_pt2e_int8")(digits_model, INT8, ctx_for(digits, calibration_size=200)).eval()
    float_top1, int8_top1 = _top1(digits_model, digits), _top1(model, digits)
    assert abs(int8_top1 - float_top1) <= 2.0  # 359 test images: about 7 images
    state = model.state_dict()
    assert any(v.dtype == torch.int8 and v.dim() == 4 for v in state.values())  # the folded conv weights
    assert not any(v.dtype == torch.float32 and v.dim() == 4 for v in state.values())  # float copies dropped
    assert metrics.size_bytes(model) < 0.4 * metrics.size_bytes(digits_model)
    x = normalize(digits.test.images[:16], digits.mean, digits.std)
    compiled = runtimes.RUNTIMES["inductor"].prepare(model, x)
    with torch.inference_mode():
        agree = (compiled(x).argmax(1) == model(x).argmax(1)).float().mean().item()
    assert agree >= 15 / 16  # inductor's int8 kernels round like the q/dq reference, up to ties


def test_ort_int8_is_an_onnx_artefact_cached_like_weights(tmp_path, digits, digits_model):
    project = write_project(tmp_path, mini_params([{"method": "quant_ort_int8", "budget": {"bits": 8},
                                                     "settings": {"calibration_size": 200}}]), digits_model)
    case = expand_cases("mini", project)[0]
    made = harness.compress_case(case, project)
    again = harness.compress_case(case, project)
    assert isinstance(again.model, OnnxModel) and again.cache_hit and not made.cache_hit
    assert metrics.model_md5(again.model) == metrics.model_md5(made.model)
    assert torch.equal(again.predictions, made.predictions)
    row = harness.measure(case, again, load_tier("mini", project))
    assert abs(row["top1"] - row["reference_top1"]) <= 2.0
    assert row["weight_bits"] == 8 and row["budget_met"] is True
    assert row["params"] == metrics.count_stored_params(digits_model)
    assert row["macs"] == row["reference_macs"] > 0 and row["gflops"] > 0
    assert row["size_bytes"] < 0.5 * row["reference_size_bytes"]


def test_pt2e_rows_count_the_graphs_macs_and_int8_weights(tmp_path, digits_model):
    project = write_project(tmp_path, mini_params([{"method": "quant_pt2e_int8", "budget": {"bits": 8},
                                                     "settings": {"calibration_size": 100}}]), digits_model)
    case = expand_cases("mini", project)[0]
    outcome = harness.compress_case(case, project)
    assert not METHODS.get("quant_pt2e_int8").cacheable and not harness.compress_case(case, project).cache_hit
    row = harness.measure(case, outcome, load_tier("mini", project))
    assert row["macs"] == row["reference_macs"] and row["weight_bits"] == 8 and row["budget_met"] is True
    assert abs(row["top1"] - row["reference_top1"]) <= 2.0


def test_ov_int8_is_an_openvino_ir_cached_and_run_by_openvino_only(tmp_path, digits_model):
    params = mini_params([{"method": "quant_ov_int8", "budget": {"bits": 8}, "settings": {"calibration_size": 100},
                           "runtimes": ["eager", "openvino", "onnxruntime"]}])
    project = write_project(tmp_path, params, digits_model)
    case = expand_cases("mini", project)[0]
    made, again = harness.compress_case(case, project), harness.compress_case(case, project)
    assert again.cache_hit and metrics.model_md5(again.model) == metrics.model_md5(made.model)
    row = harness.measure(case, again, load_tier("mini", project))
    assert abs(row["top1"] - row["reference_top1"]) <= 2.0 and row["weight_bits"] == 8
    assert row["top1_openvino"] == row["top1"] and row["latency_ms_openvino"] > 0
    assert row["runtime_errors"] == ["onnxruntime: RuntimeError: an OpenVINO IR has no ONNX graph"]
