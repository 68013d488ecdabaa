"""The device-resident trainer: same random draws and the same weights as the loop it replaced,
one host synchronisation per epoch, bf16 autocast where asked."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from slimbench import throughput, training
from slimbench.errors import ConfigError
from slimbench.models import get_model
from slimbench.augment import crop_flip, epoch_plan
from slimbench.training import DeviceClock, Recipe, autocast_dtype, evaluate, fit, train_one_epoch


def test_an_epoch_plan_draws_what_a_batch_at_a_time_loop_draws():
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plan = epoch_plan(70, 32, "crop_flip", 4, a)
    order, dy, dx, flip = torch.randperm(70, generator=b), [], [], []
    for m in (32, 32, 6):
        dy.append(torch.randint(0, 9, (m,), generator=b))
        dx.append(torch.randint(0, 9, (m,), generator=b))
        flip.append(torch.rand(m, generator=b) < 0.5)
    assert torch.equal(plan.order, order) and torch.equal(plan.dy, torch.cat(dy))
    assert torch.equal(plan.dx, torch.cat(dx)) and torch.equal(plan.flip, torch.cat(flip))
    assert epoch_plan(70, 32, "crop", 4, torch.Generator()).flip is None
    assert torch.equal(epoch_plan(5, 2, "none", 1, None, shuffle=False).order, torch.arange(5))


def test_crop_flip_without_boolean_indexing_gives_the_same_images():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 8, 8, generator=gen)
    dy, dx = torch.randint(0, 3, (16,), generator=gen), torch.randint(0, 3, (16,), generator=gen)
    flip = torch.rand(16, generator=gen) < 0.5
    padded = F.pad(x, (1, 1, 1, 1))
    expected = torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(16)])
    expected[flip] = expected[flip].flip(-1)
    assert torch.equal(crop_flip(x, dy, dx, flip, 1), expected)


def _state_md5(model) -> str:
    digest = hashlib.md5()
    for value in model.state_dict().values():
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _student_and_optimiser():
    torch.manual_seed(0)
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8).train()
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    return model, optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=100)


@pytest.mark.parametrize("teacher", [False, True])
def test_on_the_cpu_the_trainer_makes_the_weights_the_old_loop_made(digits, digits_model, teacher):
    """Over 30 steps (more than an epoch of digits: a reshuffle, crops and flips), with and
    without a teacher's forward in the loss, bit for bit."""
    cpu, weights = torch.device("cpu"), []
    for make in (throughput.legacy_steps, throughput.current_steps):
        model, optimizer, scheduler = _student_and_optimiser()
        loss = throughput.kd_loss(digits_model if teacher else None, make is throughput.legacy_steps)
        make(model, digits, optimizer, scheduler, loss, torch.Generator().manual_seed(0), cpu, 64)(30)
        weights.append(_state_md5(model))
    assert weights[0] == weights[1]


def test_an_epoch_waits_on_the_device_once(digits, monkeypatch):
    """``.item()`` is where the host waits for an accelerator: once per epoch, not per step."""
    model, optimizer, scheduler = _student_and_optimiser()
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    loss = training.cross_entropy_loss(Recipe())
    train_one_epoch(model, digits, Recipe(batch_size=16, augment="crop_flip"), optimizer, scheduler, loss,
                    torch.Generator().manual_seed(0))
    assert len(digits.train) // 16 > 50 and len(calls) == 1  # the old loop also read the loss every 50 steps


def test_precision_auto_is_bf16_on_cuda_only_and_a_typo_is_refused():
    assert autocast_dtype(Recipe(), torch.device("cpu")) is None
    assert autocast_dtype(Recipe(), torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype(Recipe(precision="fp32"), torch.device("cuda")) is None
    assert autocast_dtype(Recipe(precision="bf16"), torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; valid: auto, fp32, bf16"):
        autocast_dtype(Recipe(precision="fp16"), torch.device("cpu"))


def test_bf16_autocast_trains_a_model_as_good_as_float32(digits):
    tops, md5s = [], []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
        fit(model, digits, Recipe(epochs=3, lr=0.05, batch_size=64, precision=precision))
        tops.append(evaluate(model, digits.val, digits))
        md5s.append(_state_md5(model))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps float32 weights
    assert md5s[0] != md5s[1]  # bf16 did run
    assert tops[1] > 90.0 and abs(tops[0] - tops[1]) < 3.0


def test_the_device_clock_sums_its_spans_on_the_cpu():
    clock = DeviceClock()
    for _ in range(3):
        with clock.timed(torch.device("cpu")):
            sum(range(20000))
    assert 0.0 < clock.seconds < 1.0
