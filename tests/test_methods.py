import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import ctx_for
from slimbench import metrics
from slimbench.budgets import Budget
from slimbench.errors import BudgetError, ConfigError
from slimbench.methods import METHODS
from slimbench.methods.distill import kd_logits_loss
from slimbench.models import get_model
from slimbench.training import Recipe, evaluate, iterate


def test_kd_loss_against_a_hand_computed_value():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    T, alpha = 2.0, 0.5
    # p_s^T = softmax([0.5, 0]) = [0.6225, 0.3775]; p_t^T = [0.3775, 0.6225]
    ps, pt = [0.622459, 0.377541], [0.377541, 0.622459]
    kl = sum(b * torch.log(torch.tensor(b / a)) for a, b in zip(ps, pt))
    ce = -torch.log(torch.tensor(0.731059))  # softmax([1, 0])[0]
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert kd_logits_loss(s, t, y, T, alpha).item() == pytest.approx(expected.item(), abs=1e-5)


def test_kd_loss_reduces_to_cross_entropy_at_alpha_zero():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert kd_logits_loss(s, t, y, 4.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item())


@pytest.mark.parametrize("name,budget,settings", [
    ("prune_global_magnitude", Budget("sparsity", 0.5), {}),
    ("quant_ptq_int8", Budget("bits", 8), {"calibration_size": 128}),
    ("kd_logits", Budget("params", 100_000), {}),
    ("arch_dwsep", Budget("params", 20_000), {}),
])
def test_methods_never_mutate_their_input(name, budget, settings, digits, digits_model):
    given = copy.deepcopy(digits_model)
    before = {k: v.clone() for k, v in given.state_dict().items()}
    METHODS.get(name)(given, budget, ctx_for(digits, teacher=digits_model, **settings))
    after = given.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_global_pruning_hits_the_rate_with_one_global_threshold(digits, digits_model):
    pruned = METHODS.get("prune_global_magnitude")(digits_model, Budget("sparsity", 0.8), ctx_for(digits))
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-4)
    layers = metrics.per_layer_sparsity(pruned)
    assert max(layers.values()) - min(layers.values()) > 0.2  # rates differ per layer: the threshold is global
    kept = torch.cat([w[w != 0].abs() for _, w in metrics.prunable_weights(pruned)])
    original = torch.cat([w.abs().flatten() for _, w in metrics.prunable_weights(digits_model)])
    assert kept.min() >= original.kthvalue(int(0.8 * original.numel())).values  # every survivor beats the cut
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())  # masks made permanent


def test_int8_ptq_agrees_with_fp32_and_shrinks_the_model(digits, digits_model):
    quantized = METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8), ctx_for(digits, calibration_size=256))
    x, _, _ = next(iterate(digits.test, digits, 128))
    with torch.inference_mode():
        agree = (quantized(x).argmax(1) == digits_model(x).argmax(1)).float().mean().item()
    assert agree > 0.9
    assert metrics.weight_bits(quantized) == 8
    assert metrics.size_bytes(quantized) < 0.5 * metrics.size_bytes(digits_model)
    assert abs(evaluate(quantized, digits.test, digits) - evaluate(digits_model, digits.test, digits)) < 3


def test_quantized_model_macs_equal_the_float_model(digits, digits_model):
    quantized = METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8), ctx_for(digits, calibration_size=64))
    x = torch.randn(1, 1, 8, 8)
    assert metrics.count_macs(quantized, x) == metrics.count_macs(digits_model, x)


def test_unknown_observer_and_settings_are_clear_errors(digits, digits_model):
    with pytest.raises(ConfigError, match="unknown observer 'median'; valid: minmax, moving_average, histogram"):
        METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8), ctx_for(digits, observer="median"))
    with pytest.raises(ConfigError, match="has no settings \\['temprature'\\]"):
        METHODS.get("kd_logits")(digits_model, Budget("params", 1e5), ctx_for(digits, digits_model, temprature=4))


def test_a_budget_of_the_wrong_kind_is_refused(digits, digits_model):
    with pytest.raises(BudgetError, match="takes budget kinds sparsity, not 'bits'"):
        METHODS.get("prune_global_magnitude")(digits_model, Budget("bits", 8), ctx_for(digits))


def test_kd_needs_a_teacher(digits, digits_model):
    with pytest.raises(ConfigError, match="needs a teacher"):
        METHODS.get("kd_logits")(digits_model, Budget("params", 1e5), ctx_for(digits))


def test_arch_dwsep_sizes_to_the_budget(digits, digits_model):
    ctx = ctx_for(digits)
    student = METHODS.get("arch_dwsep")(digits_model, Budget("params", 15_000), ctx)
    assert metrics.count_stored_params(student) <= 15_000 and ctx.log["width"] > 0
    assert any(m.groups == m.in_channels > 1 for m in student.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_training_and_latency_run_on_a_gpu(digits, monkeypatch):
    from slimbench.training import fit
    monkeypatch.setenv("SLIMBENCH_DEVICE", "cuda")
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    result = fit(model, digits, Recipe(epochs=1, lr=0.05, batch_size=64))
    assert result.best_val_top1 > 50 and next(model.parameters()).device.type == "cpu"  # back on the CPU
    x = torch.randn(4, 1, 8, 8, device="cuda")
    timing = metrics.paired_latency(model.cuda(), copy.deepcopy(model), x, rounds=3, warmup=1)
    assert min(timing.reference_ms) > 0 and min(timing.case_ms) > 0


def test_a_method_compresses_with_its_effective_settings(digits, digits_model):
    ctx = ctx_for(digits, calibration_size=64)
    METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8), ctx)
    assert ctx.settings == {"observer": "histogram", "calibration_size": 64}  # the dataclass's default observer
    assert ctx.log["calibration_images"] == 64
    with pytest.raises(ConfigError, match="setting calibration_size of method quant_ptq_int8 must be int or str"):
        METHODS.get("quant_ptq_int8")(digits_model, Budget("bits", 8), ctx_for(digits, calibration_size=6.4))
