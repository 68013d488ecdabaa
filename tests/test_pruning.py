"""Pruning: achieved sparsity, global thresholds, iterative schedules, structured channel removal."""

import copy
from functools import partial

import pytest
import torch
import torch_pruning as tp
from torch import nn

from conftest import ctx_for
from slimbench import metrics
from slimbench.budgets import Budget
from slimbench.errors import ConfigError
from slimbench.methods import METHODS
from slimbench.methods.prune import schedule_targets
from slimbench.methods.prune_structured import prune_channels
from slimbench.models import get_model


ctx_for = partial(ctx_for, lr=0.02)  # pruning tests fine-tune at 0.02


def layer_zeros(model):
    return {name: (int((w == 0).sum()), w.numel()) for name, w in metrics.prunable_weights(model)}


def test_per_layer_l1_prunes_each_layer_to_the_rate(digits, digits_model):
    pruned = METHODS.get("prune_l1_layer")(digits_model, Budget("sparsity", 0.6), ctx_for(digits))
    for name, (zeros, n) in layer_zeros(pruned).items():
        assert abs(zeros - round(0.6 * n)) <= 1, name


def test_global_magnitude_uses_one_threshold_for_all_layers(digits, digits_model):
    everything = torch.cat([w.abs().flatten() for _, w in metrics.prunable_weights(digits_model)])
    threshold = everything.kthvalue(int(0.6 * everything.numel())).values
    pruned = METHODS.get("prune_global_magnitude")(digits_model, Budget("sparsity", 0.6), ctx_for(digits))
    rates = []
    for (name, before), (_, after) in zip(metrics.prunable_weights(digits_model), metrics.prunable_weights(pruned)):
        assert torch.all(after[before.abs() > threshold] != 0) and torch.all(after[before.abs() < threshold] == 0)
        rates.append(float((after == 0).float().mean()))
    assert max(rates) - min(rates) > 0.2  # layers end far apart: the threshold is global, not per layer


def test_iterative_pruning_reaches_the_target_on_schedule(digits, digits_model):
    ctx = ctx_for(digits, rounds=3, finetune_epochs=1)
    pruned = METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx)
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert ctx.log["round_targets"][-1] == 0.8 and len(ctx.log["best_epochs"]) == 3
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())


def test_iterative_pruning_resumes_at_its_last_finished_round(digits, digits_model, tmp_path, monkeypatch):
    import slimbench.methods.prune as prune_module
    real_finetune, calls, interrupt = prune_module.finetune, [], [True]

    def finetune(model, ctx, epochs, tag, **kw):
        calls.append(tag)
        if tag.endswith("round3") and interrupt[0]:
            raise KeyboardInterrupt  # the session ends during round 3
        real_finetune(model, ctx, epochs, tag, **kw)

    monkeypatch.setattr(prune_module, "finetune", finetune)

    def run():
        ctx = ctx_for(digits, rounds=3, finetune_epochs=1, final_epochs=1)
        ctx.resume_dir = tmp_path
        return METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx), ctx

    with pytest.raises(KeyboardInterrupt):
        run()
    assert sorted(p.name for p in tmp_path.glob("*-done.pt")) == ["prune_iterative-round1-done.pt",
                                                                    "prune_iterative-round2-done.pt"]
    calls.clear()
    interrupt[0] = False
    pruned, ctx = run()
    assert calls == ["prune_iterative-round3", "prune_iterative-final"]  # rounds 1-2 not redone
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert len(ctx.log["best_epochs"]) == 4  # the saved rounds' log came back with their model


def test_schedules():
    assert schedule_targets(0.9, 3, "linear") == pytest.approx([0.3, 0.6, 0.9])
    cubic = schedule_targets(0.9, 3, "cubic")
    assert cubic[-1] == pytest.approx(0.9) and cubic[0] > 0.3  # faster early than linear
    with pytest.raises(ConfigError, match="valid: linear, cubic"):
        schedule_targets(0.9, 3, "step")


@pytest.mark.parametrize("name", ["prune_structured", "prune_bn_slimming"])
def test_structured_pruning_removes_channels_and_stays_runnable(digits, digits_model, name):
    ctx = ctx_for(digits, finetune_epochs=1)
    pruned = METHODS.get(name)(digits_model, Budget("macs_speedup", 1.5), ctx)
    x = torch.randn(3, 1, 8, 8)
    assert pruned(x).shape == (3, 10)
    assert metrics.count_stored_params(pruned) < metrics.count_stored_params(digits_model)
    dense, small = metrics.count_macs(digits_model, x[:1]), metrics.count_macs(pruned, x[:1])
    assert dense / small >= 1.5 and ctx.log["fits_budget"]
    assert Budget("macs_speedup", 1.5).is_met({"reference_macs": dense, "macs": small})


def test_cifar_resnet_keeps_its_residual_width():
    model = get_model("cifar_resnet8").eval()
    x = torch.randn(2, 3, 32, 32)
    pruned = prune_channels(copy.deepcopy(model), 0.5, x, tp.importance.MagnitudeImportance(p=1))
    assert pruned(x).shape == (2, 10)
    assert pruned.layer2[0].conv1.out_channels == 16 and pruned.layer2[0].conv2.out_channels == 32


def test_removing_a_zero_channel_leaves_outputs_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, 3)).eval()
    with torch.no_grad():  # channel 2 of the first conv and channel 1 of the second carry nothing
        model[0].weight[2].zero_(), model[0].bias[2].zero_(), model[2].weight[:, 2].zero_()
        model[2].weight[1].zero_(), model[2].bias[1].zero_(), model[4].weight[:, 25:50].zero_()
    x = torch.randn(4, 1, 5, 5)
    before = model(x)
    prune_channels(model, 0.25, x, tp.importance.MagnitudeImportance(p=1))
    assert model[0].out_channels == 3 and model[2].in_channels == 3 and model[4].in_features == 75
    assert torch.allclose(model(x), before, atol=1e-6)


def test_macs_speedup_budget_labels_and_checks():
    budget = Budget("macs_speedup", 2)
    assert budget.label == "macs2x"
    assert not budget.is_met({"reference_macs": 100, "macs": 60})
