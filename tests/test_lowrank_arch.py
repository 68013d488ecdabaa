"""Low-rank factorization and budget-sized compact architectures; the vectorised crop."""

import copy

import pytest
import torch
from torch import nn

from conftest import ctx_for
from slimbench.budgets import Budget
from slimbench.methods import METHODS
from slimbench.methods.lowrank import candidate_layers, factorize, full_rank, params_after, ranks_for_fraction
from slimbench.metrics import count_stored_params
from slimbench.models import get_model
from slimbench.augment import augment_batch


def test_full_rank_factorization_reproduces_the_outputs(digits_model):
    x = torch.randn(4, 1, 8, 8)
    original = digits_model(x)
    layers = candidate_layers(digits_model)
    assert {"features.0", "features.4", "features.8", "classifier.1", "classifier.3"} <= set(layers)
    factored = factorize(copy.deepcopy(digits_model), {n: full_rank(m) for n, m in layers.items()})
    assert all(isinstance(factored.get_submodule(n), nn.Sequential) for n in layers)
    assert torch.allclose(factored(x), original, rtol=1e-4, atol=1e-4)


def test_truncated_rank_meets_the_params_budget(digits, digits_model):
    budget = 0.4 * count_stored_params(digits_model)
    ctx = ctx_for(digits)
    model = METHODS.get("lowrank_svd")(digits_model, Budget("params", budget), ctx)
    assert count_stored_params(model) <= budget
    assert ctx.log["fits_budget"] and ctx.log["factorized_layers"] > 0
    assert params_after(digits_model, ranks_for_fraction(digits_model, ctx.log["rank_fraction"])) == count_stored_params(model)


def test_lowrank_reports_an_impossible_budget(digits, digits_model):
    ctx = ctx_for(digits, finetune_epochs=0)
    model = METHODS.get("lowrank_svd")(digits_model, Budget("params", 100), ctx)
    assert not ctx.log["fits_budget"]
    assert not Budget("params", 100).is_met({"params": count_stored_params(model)})


@pytest.mark.parametrize("method,groups", [("arch_standard", None), ("arch_dwsep", None), ("arch_group", 2),
                                           ("arch_group", 4)])
def test_width_sizing_meets_the_budget(digits, method, groups):
    settings = {"groups": groups} if groups else {}
    ctx = ctx_for(digits, **settings)
    model = METHODS.get(method)(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8),
                                Budget("params", 20_000), ctx)
    assert count_stored_params(model) <= 20_000 and ctx.log["fits_budget"]
    conv = method.removeprefix("arch_")
    wider = ctx.build_model(width=ctx.log["width"] * 1.1, conv=conv, **({"groups": groups} if groups else {}))
    assert count_stored_params(wider) > 20_000 or ctx.log["width"] >= 8.0  # the width found is (about) the largest
    if groups:
        assert model.features[4].groups == groups


def test_width_sizing_reports_an_impossible_budget(digits):
    ctx = ctx_for(digits)
    model = METHODS.get("arch_dwsep")(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8),
                                      Budget("params", 50), ctx)
    assert ctx.log["fits_budget"] is False
    assert not Budget("params", 50).is_met({"params": count_stored_params(model)})


def reference_crop(x, mode, gen):
    """The per-image loop the vectorised crop replaced (same random draws, same order)."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if mode == "crop_flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


@pytest.mark.parametrize("mode", ["crop", "crop_flip"])
def test_vectorised_crop_equals_the_per_image_crop(mode):
    x = torch.randn(16, 3, 32, 32)
    got = augment_batch(x, mode, torch.Generator().manual_seed(3))
    assert torch.equal(got, reference_crop(x, mode, torch.Generator().manual_seed(3)))
