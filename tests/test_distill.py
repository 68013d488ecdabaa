"""Feature distillation: loss terms against hand-computed values, hooks, and the methods end to end."""

import math

import pytest
import torch
from torch import nn

from conftest import ctx_for
from slimbench.budgets import Budget
from slimbench.errors import ConfigError
from slimbench.methods import METHODS
from slimbench.methods.distill import (FeatureTaps, TeacherSignal, attention_loss, feature_weight, hint_loss,
                                       kd_logits_loss)
from slimbench.metrics import count_stored_params
from slimbench.models import get_model
from slimbench.training import Recipe, normalize

# fashion_cnn at 8x8 (digits): features.2 = first ReLU (8x8), features.6 = second ReLU (4x4)
PAIRS = [["features.6", "features.6"], ["features.10", "features.10"]]


def test_kd_loss_at_temperature_one_by_hand():
    # p_t = softmax([0, 1]) = [1 - s, s] with s = sigmoid(1); log p_s - log p_t = [+1, -1]
    s = 1 / (1 + math.exp(-1))
    kl = (1 - s) * (-1.0) + s * 1.0
    ce = math.log(1 + math.exp(-1))
    got = kd_logits_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 1.0, 0.5)
    assert got.item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-6)
    assert got.item() == pytest.approx(0.38769, abs=1e-5)


def test_attention_loss_by_hand():
    student = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)  # map [9, 16] / sqrt(337)
    teacher = torch.tensor([4.0, 3.0]).view(1, 1, 1, 2)  # map [16, 9] / sqrt(337)
    assert attention_loss(student, teacher).item() == pytest.approx(49 / 337, abs=1e-6)


def test_attention_loss_resizes_the_student_map():
    student, teacher = torch.ones(2, 3, 8, 8), torch.ones(2, 5, 4, 4)
    assert attention_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_hint_losses_by_hand():
    projected, target = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    assert hint_loss(projected, target, "mse").item() == pytest.approx(2.5)
    assert hint_loss(projected, target, "smooth_l1").item() == pytest.approx((0.5 + 1.5) / 2)
    with pytest.raises(ConfigError, match="valid: mse, smooth_l1"):
        hint_loss(projected, target, "l3")


def test_feature_weight_schedules():
    assert feature_weight("quadratic", 2, 4) == pytest.approx(0.25)
    assert feature_weight("quadratic", 4, 4) == 1.0
    assert feature_weight("constant", 1, 4) == 1.0
    with pytest.raises(ConfigError, match="valid: constant, quadratic"):
        feature_weight("cubic", 1, 4)


def test_taps_capture_the_named_modules_and_leave_no_hook_behind():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU()))
    x = torch.randn(2, 1, 5, 5)
    tap = FeatureTaps(model, ["1", "2.0"], "the student")
    model(x)
    assert torch.equal(tap["1"], torch.relu(model[0](x)))
    assert tap["2.0"].shape == (2, 2, 5, 5)
    tap.close()
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ConfigError, match="has no module 'layer9'.*valid module paths: 0, 1, 2, 2.0, 2.1"):
        FeatureTaps(model, ["layer9"], "the student")


def test_cached_teacher_logits_equal_a_forward_pass(digits, digits_model):
    ctx = ctx_for(digits, digits_model)
    cached = TeacherSignal(digits_model, ctx, cache_logits=True)
    live = TeacherSignal(digits_model, ctx, cache_logits=False)
    assert cached.cached is not None and live.cached is None
    idx = torch.tensor([5, 0, 17])
    images = normalize(digits.train.images[idx], digits.mean, digits.std)
    assert torch.allclose(cached.logits(images, idx).cpu(), live.logits(images, idx).cpu(), atol=1e-5)


def test_augmentation_disables_the_logit_cache(digits, digits_model):
    ctx = ctx_for(digits, digits_model, recipe=Recipe(epochs=1, augment="crop"))
    assert TeacherSignal(digits_model, ctx, cache_logits=True).cached is None


@pytest.mark.parametrize("name,settings", [
    ("kd_hint", {"layers": PAIRS, "feature_schedule": "quadratic"}),
    ("kd_hint", {"layers": [["features.2", "features.6"]], "hint_loss": "mse"}),  # 8x8 -> 4x4 resize
    ("kd_attention", {"layers": PAIRS}),
])
def test_feature_distillation_trains_a_plain_student(digits, digits_model, name, settings):
    student = METHODS.get(name)(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8),
                                Budget("params", 100_000), ctx := ctx_for(digits, digits_model, **settings))
    assert count_stored_params(student) == count_stored_params(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8))
    assert all(not m._forward_hooks for m in student.modules()) and all(not m._forward_hooks for m in digits_model.modules())
    assert ctx.log["best_epoch"] == 1 and ctx.log["teacher_seconds"] >= 0


def test_feature_distillation_needs_layer_pairs(digits, digits_model):
    with pytest.raises(ConfigError, match="setting `layers` must list"):
        METHODS.get("kd_attention")(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8),
                                    Budget("params", 100_000), ctx_for(digits, digits_model))
