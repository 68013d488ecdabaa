"""The recipe and method levers of the headline recipes (issue 15), each on digits in seconds:
cosine schedule, weight EMA, RandAugment/TrivialAugment, distillation during pruning fine-tuning,
the BN-gamma filter round, and a ResNet-8 sized to the 100k budget."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from slimbench import metrics, training
from slimbench.budgets import Budget
from slimbench.errors import ConfigError
from slimbench.methods import METHODS
from slimbench.methods import prune as prune_module
from slimbench.methods.arch import width_for_budget
from slimbench.metrics import count_stored_params
from slimbench.models import get_model
from slimbench.augment import POLICY_CHUNK, BatchPolicy, epoch_plan
from slimbench.training import Recipe, WeightEMA, cosine_factor, evaluate, fit, make_scheduler, train_one_epoch

from conftest import ctx_for


def _md5(model: nn.Module) -> str:
    digest = hashlib.md5()
    for value in model.state_dict().values():
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _student() -> nn.Module:
    torch.manual_seed(0)
    return get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)


# --- schedule -------------------------------------------------------------------------------

def test_cosine_warms_up_linearly_then_anneals_to_zero():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = make_scheduler(opt, Recipe(epochs=4, lr=0.1, schedule="cosine", warmup_epochs=1), steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([0.1 * (s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(0.1) and lrs[25] == pytest.approx(0.05)  # halfway down the cosine
    assert lrs[39] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    assert cosine_factor(40, 10, 40) == pytest.approx(0.0)


def test_the_default_schedule_is_onecycle_and_bad_schedules_are_refused():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    assert isinstance(make_scheduler(opt, Recipe(epochs=2), 5), torch.optim.lr_scheduler.OneCycleLR)
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'; valid: onecycle, cosine"):
        make_scheduler(opt, Recipe(schedule="cosin"), 5)
    with pytest.raises(ConfigError, match="warmup_epochs 2 is not below epochs 2; fix: shorten the warm-up"):
        make_scheduler(opt, Recipe(epochs=2, schedule="cosine", warmup_epochs=2), 5)


def test_a_cosine_adamw_recipe_trains_digits(digits):
    model = _student()
    fit(model, digits, Recipe(epochs=3, lr=0.003, optimizer="adamw", weight_decay=0.05, batch_size=64,
                              schedule="cosine", warmup_epochs=1, label_smoothing=0.1))
    assert evaluate(model, digits.val, digits) > 90.0


# --- weight EMA -----------------------------------------------------------------------------

def test_the_ema_averages_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    ema = WeightEMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model.train()(torch.randn(4, 1, 5, 5))  # moves the BN statistics
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert ema.current_decay() == pytest.approx(0.1)  # warm-up: (1 + t) / (10 + t) at step t = 0
    ema.update()
    after, now = ema.module.state_dict(), model.state_dict()
    for key in ("0.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(after[key], 0.1 * before[key] + 0.9 * now[key])
    assert after["1.num_batches_tracked"] == now["1.num_batches_tracked"] == 1
    ema.steps = 1000
    assert ema.current_decay() == 0.9  # the set decay once (1 + t) / (10 + t) exceeds it
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ConfigError, match="ema 1.0 is not a decay in"):
        WeightEMA(model, 1.0)


def test_fit_with_ema_selects_and_returns_the_ema_weights(digits):
    runs = []
    for ema in (0.0, 0.9, 0.9):
        model = _student()
        result = fit(model, digits, Recipe(epochs=2, lr=0.05, batch_size=64, ema=ema))
        runs.append((_md5(model), result))
        assert evaluate(model, digits.val, digits) == pytest.approx(result.best_val_top1)  # what was selected
    assert runs[1][0] == runs[2][0] != runs[0][0]  # deterministic, and not the raw weights
    assert all("val_top1_raw" in h for h in runs[1][1].history)
    assert runs[1][1].best_val_top1 > 90.0


def test_an_interrupted_ema_fit_resumes_to_the_same_weights(digits, tmp_path):
    recipe = Recipe(epochs=3, lr=0.05, batch_size=64, ema=0.9, augment="randaugment")
    whole = _student()
    fit(whole, digits, recipe)

    def stop_at_3(epoch: int, epochs: int) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_student(), digits, recipe, resume_path=tmp_path / "r.pt", on_epoch=stop_at_3)
    resumed = _student()
    fit(resumed, digits, recipe, resume_path=tmp_path / "r.pt")
    assert _md5(resumed) == _md5(whole)


# --- RandAugment / TrivialAugment -----------------------------------------------------------

@pytest.mark.parametrize("augment", ["randaugment", "trivialaugment"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_policy_op_runs_on_a_uint8_batch(augment, shape):
    policy = BatchPolicy(augment, *shape[1:])
    images = torch.randint(0, 256, (2 * POLICY_CHUNK, *shape), dtype=torch.uint8, generator=torch.Generator())
    for index in range(len(policy.space)):
        out = policy.apply(images, [[policy.op(index, 30, True)], [policy.op(index, 5, False)]])
        assert out.dtype == torch.uint8 and out.shape == images.shape
    assert len(policy.space) == 14 and policy.num_ops == (2 if augment == "randaugment" else 1)


def test_policy_draws_come_from_the_fits_generator_per_chunk_of_images():
    state = torch.get_rng_state()
    plans = [epoch_plan(100, 40, "randaugment", 1, torch.Generator().manual_seed(3), size=(8, 8)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    assert plans[0].ops == plans[1].ops  # the same seed, the same ops
    assert [len(batch) for batch in plans[0].ops] == [5, 5, 3]  # ceil(40/8), ceil(40/8), ceil(20/8)
    chunks = [ops for batch in plans[0].ops for ops in batch]
    assert all(len(ops) == 2 for ops in chunks) and len({tuple(ops) for ops in chunks}) > 5  # diverse chunks
    crop = epoch_plan(100, 40, "crop_flip", 1, torch.Generator().manual_seed(3))
    assert torch.equal(crop.dy, plans[0].dy) and torch.equal(crop.flip, plans[0].flip)  # crop/flip draws first


def test_one_chunk_shares_its_op_and_chunks_differ():
    policy = BatchPolicy("trivialaugment", 8, 8)
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(2 * POLICY_CHUNK, 1, 1, 1)
    out = policy.apply(images, [[("Rotate", 90.0)], [("Identity", 0.0)]])
    assert all(torch.equal(out[i], out[0]) for i in range(POLICY_CHUNK))
    assert not torch.equal(out[0], images[0]) and torch.equal(out[POLICY_CHUNK:], images[POLICY_CHUNK:])


@pytest.mark.parametrize("augment", ["randaugment", "trivialaugment"])
def test_a_policy_epoch_waits_on_the_device_once_and_trains(digits, monkeypatch, augment):
    model = _student().train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=200)
    recipe = Recipe(batch_size=16, augment=augment, ema=0.99)
    ema = WeightEMA(model, recipe.ema)
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    train_one_epoch(model, digits, recipe, optimizer, scheduler, training.cross_entropy_loss(recipe),
                    torch.Generator().manual_seed(0), ema=ema)
    assert len(digits.train) // 16 > 50 and len(calls) == 1
    monkeypatch.undo()
    model = _student()
    fit(model, digits, Recipe(epochs=6, lr=0.05, batch_size=64, augment=augment))
    assert evaluate(model, digits.val, digits) > 80.0


# --- pruning: distillation from the dense model, BN-gamma filter round ----------------------

def test_pruning_fine_tunes_against_the_dense_models_logits(digits, digits_model, monkeypatch):
    seen = []
    real = prune_module.kd_logits_loss
    monkeypatch.setattr(prune_module, "kd_logits_loss",
                        lambda s, t, y, temp, alpha: seen.append((temp, alpha)) or real(s, t, y, temp, alpha))
    plain = METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx_for(digits, rounds=2))
    assert not seen  # off by default
    ctx = ctx_for(digits, rounds=2, distill_alpha=0.7, distill_temperature=2.0)
    distilled = METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx)
    assert seen and set(seen) == {(2.0, 0.7)}
    assert _md5(distilled) != _md5(plain) and metrics.sparsity(distilled) == pytest.approx(0.8, abs=1e-3)
    assert evaluate(distilled, digits.val, digits) > 85.0
    seen.clear()
    ctx = ctx_for(digits, finetune_epochs=1, distill_alpha=0.9)
    METHODS.get("prune_structured")(digits_model, Budget("macs_speedup", 2), ctx)
    assert seen and set(seen) == {(4.0, 0.9)}


def test_masked_fine_tuning_keeps_an_ema_and_its_zeros(digits, digits_model):
    ctx = ctx_for(digits, recipe=Recipe(epochs=1, lr=0.02, batch_size=64, ema=0.9), rounds=2)
    pruned = METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx)
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert evaluate(pruned, digits.val, digits) > 80.0


@pytest.mark.parametrize("settings, message", [
    ({"distill_alpha": 1.5}, "setting distill_alpha must lie in [0, 1], got 1.5"),
    ({"distill_temperature": 0.0}, "setting distill_temperature must be positive, got 0.0"),
    ({"bn_filter_fraction": 0.95}, "setting bn_filter_fraction must lie in [0, 0.9], got 0.95"),
    ({"distill_alhpa": 0.5}, "method prune_iterative has no settings ['distill_alhpa']"),
])
def test_bad_pruning_lever_settings_are_refused(settings, message):
    with pytest.raises(ConfigError) as info:
        METHODS.get("prune_iterative").effective_settings(settings)
    assert message in str(info.value)


def test_the_bn_gamma_round_masks_whole_filters_before_global_pruning(digits, digits_model, monkeypatch):
    masked_filters = {}
    real = prune_module.mask_filters_by_bn_gamma

    def spy(model, fraction):
        count = real(model, fraction)
        pairs = prune_module.conv_bn_pairs(model)
        gammas = torch.cat([bn.weight.detach().abs() for _, bn in pairs])
        dead = torch.cat([(conv.weight_mask.flatten(1).sum(1) == 0) for conv, _ in pairs])
        masked_filters.update(count=count, dead=int(dead.sum()), gap=bool(gammas[dead].max() <= gammas[~dead].min()))
        return count

    monkeypatch.setattr(prune_module, "mask_filters_by_bn_gamma", spy)
    ctx = ctx_for(digits, rounds=2, bn_filter_fraction=0.25)
    pruned = METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx)
    n_filters = sum(conv.out_channels for conv, _ in prune_module.conv_bn_pairs(digits_model))
    assert masked_filters == {"count": int(0.25 * n_filters), "dead": int(0.25 * n_filters), "gap": True}
    assert ctx.log["bn_filters_masked"] == int(0.25 * n_filters) and len(ctx.log["best_epochs"]) == 3
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert evaluate(pruned, digits.val, digits) > 80.0


def test_an_interrupted_filter_round_case_resumes_after_round_0(digits, digits_model, monkeypatch, tmp_path):
    real_finetune, calls, interrupt = prune_module.finetune, [], [True]

    def finetune(model, ctx, epochs, tag, loss_fn=None):
        calls.append(tag)
        if tag.endswith("round1") and interrupt[0]:
            raise KeyboardInterrupt
        real_finetune(model, ctx, epochs, tag, loss_fn=loss_fn)

    monkeypatch.setattr(prune_module, "finetune", finetune)

    def run():
        ctx = ctx_for(digits, rounds=2, bn_filter_fraction=0.2, distill_alpha=0.5)
        ctx.resume_dir = tmp_path
        return METHODS.get("prune_iterative")(digits_model, Budget("sparsity", 0.8), ctx)

    with pytest.raises(KeyboardInterrupt):
        run()
    calls.clear()
    interrupt[0] = False
    pruned = run()
    assert calls == ["prune_iterative-round1", "prune_iterative-round2", "prune_iterative-final"]
    assert metrics.sparsity(pruned) == pytest.approx(0.8, abs=1e-3)


# --- a student that uses the whole budget ---------------------------------------------------

def test_the_budget_search_widens_resnet8_to_94744_params_under_100k():
    build = lambda w: get_model("cifar_resnet8", num_classes=10, in_channels=1, width=w)  # noqa: E731
    width = width_for_budget(build, 100_000)
    assert count_stored_params(build(width)) == 94_744 == count_stored_params(build(1.125))
    assert count_stored_params(build(1.25)) > 100_000  # the next even stem width (20) is over
    assert count_stored_params(build(1)) == 75_002  # the public checkpoints' shape is unchanged
    model = build(1.125)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and model.conv1.out_channels == 18
