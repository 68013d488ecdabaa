"""The one bisection behind the width, rank-fraction and channel-ratio searches: it takes exactly the
probes, and returns exactly the values, of the three searches it replaced (copied below from
slimbench before the change), so models sized by it are unchanged."""

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from slimbench.budgets import Budget
from slimbench.methods import lowrank
from slimbench.methods.arch import MIN_WIDTH, width_for_budget
from slimbench.methods.lowrank import fraction_for_budget
from slimbench.methods.prune_structured import MAX_RATIO, budget_check, prune_channels, ratio_for_budget
from slimbench.methods.sizing import bisect_fit
from slimbench.metrics import count_macs, count_stored_params
from slimbench.models import get_model


# --- the searches as they were (methods/arch.py, lowrank.py, prune_structured.py at be56903) ---

def old_width_for_budget(build, max_params, lo=MIN_WIDTH, hi=8.0, steps=30):
    if count_stored_params(build(lo)) > max_params:
        return None
    if count_stored_params(build(hi)) <= max_params:
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count_stored_params(build(mid)) <= max_params else (lo, mid)
    return lo


def old_fraction_for_budget(model, max_params, steps=30):
    fits = lambda f: lowrank.params_after(model, lowrank.ranks_for_fraction(model, f)) <= max_params  # noqa: E731
    lo, hi = 0.0, 1.0
    if not fits(lo):
        return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def old_ratio_for_budget(fits, hi=MAX_RATIO, steps=12):
    if fits(0.0):
        return 0.0
    if not fits(hi):
        return None
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def old_budget_check(model, budget, example):
    if budget.kind == "params":
        return lambda pruned: count_stored_params(pruned) <= budget.value
    dense = count_macs(model, example)
    return lambda pruned: dense / count_macs(pruned, example) >= budget.value


# --- helpers ---

class Sized(nn.Module):
    """A module with ``round(1000 * w)`` parameters: a width search's model, at no cost."""

    def __init__(self, w):
        super().__init__()
        self.p = nn.Parameter(torch.empty(round(1000 * w)))


def recorded(fn, probes):
    def wrapper(x, *rest):
        probes.append(x)
        return fn(x, *rest)
    return wrapper


def same_run(old, new):
    """Run both searches (each given a recorder of its probes); return (results, probe lists)."""
    old_probes, new_probes = [], []
    return (old(old_probes), new(new_probes)), (old_probes, new_probes)


# --- the three searches against their old selves ---

@pytest.mark.parametrize("max_params", [0, 49, 50, 51, 123, 999.5, 4567, 7999, 8000, 8001, 1e9])
def test_width_search_takes_the_old_probes(max_params):
    (old, new), (old_probes, new_probes) = same_run(
        lambda probes: old_width_for_budget(recorded(Sized, probes), max_params),
        lambda probes: width_for_budget(recorded(Sized, probes), max_params))
    assert new == old and type(new) is type(old)
    assert new_probes == old_probes


@pytest.mark.parametrize("conv,groups", [("standard", None), ("dwsep", None), ("group", 2), ("group", 4)])
@pytest.mark.parametrize("max_params", [50, 5_000, 20_000, 300_000])
def test_width_search_on_real_models(conv, groups, max_params):
    kwargs = {"conv": conv, **({"groups": groups} if groups else {})}
    build = lambda w: get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8, width=w, **kwargs)  # noqa: E731
    assert width_for_budget(build, max_params) == old_width_for_budget(build, max_params)


@pytest.mark.parametrize("share", [0.0, 0.02, 0.1, 0.25, 0.4, 0.7, 0.95, 1.0, 1.5])
@pytest.mark.parametrize("arch", ["fashion_cnn", "cifar_resnet8"])
def test_rank_fraction_search_takes_the_old_probes(share, arch, monkeypatch):
    model = (get_model(arch, num_classes=10, in_channels=1, image_size=8) if arch == "fashion_cnn"
             else get_model(arch))
    max_params = share * count_stored_params(model)
    real = lowrank.ranks_for_fraction
    probes = []
    monkeypatch.setattr(lowrank, "ranks_for_fraction", lambda model, f: probes.append(f) or real(model, f))
    old = old_fraction_for_budget(model, max_params)
    old_probes = probes[:]
    probes.clear()
    new = fraction_for_budget(model, max_params)
    assert new == old and type(new) is type(old)
    assert probes == old_probes


def thresholds():
    """Predicates on a channel ratio: monotone ones at many thresholds, and non-monotone ones
    (torch-pruning's params are not monotone near 1) whose end points disagree with the middle."""
    preds = {f">={t}": (lambda t: lambda r: r >= t)(t) for t in [0.0, 1e-4, 0.1, 0.3, 0.45, 0.5, 0.8999, 0.9, 0.95]}
    preds["never"] = lambda r: False
    preds["only 0"] = lambda r: r == 0.0
    preds["only 0.9"] = lambda r: r == MAX_RATIO
    preds["a band"] = lambda r: 0.2 < r < 0.6
    return preds


@pytest.mark.parametrize("name", list(thresholds()))
@pytest.mark.parametrize("hi,steps", [(MAX_RATIO, 12), (0.5, 3)])
def test_channel_ratio_search_takes_the_old_probes(name, hi, steps):
    fits = thresholds()[name]
    (old, new), (old_probes, new_probes) = same_run(
        lambda probes: old_ratio_for_budget(recorded(fits, probes), hi, steps),
        lambda probes: ratio_for_budget(recorded(fits, probes), hi, steps))
    assert new == old and type(new) is type(old)
    assert new_probes == old_probes


@pytest.mark.parametrize("budget", [Budget("params", 20_000), Budget("params", 60_000), Budget("macs_speedup", 1.5),
                                    Budget("macs_speedup", 3)])
def test_channel_ratio_search_on_a_real_model(budget):
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8).eval()
    example = torch.randn(2, 1, 8, 8)
    importance = tp.importance.MagnitudeImportance(p=1)

    def fits_with(meets, probes):
        def fits(ratio):
            pruned = prune_channels(copy.deepcopy(model), ratio, example, importance)
            probes.append((ratio, meets(pruned)))
            return probes[-1][1]
        return fits

    (old, new), (old_probes, new_probes) = same_run(
        lambda probes: old_ratio_for_budget(fits_with(old_budget_check(model, budget, example), probes)),
        lambda probes: ratio_for_budget(fits_with(budget_check(model, budget, example), probes)))
    assert new == old and new_probes == old_probes  # same ratios tried, same verdicts on each


# --- the helper itself ---

@pytest.mark.parametrize("safe,far", [(0.0, 1.0), (1.0, 0.0), (0.05, 8.0)])
@pytest.mark.parametrize("share", [0.01, 0.3, 0.77])
def test_the_result_fits_and_lies_next_to_the_boundary(safe, far, share):
    boundary = safe + share * (far - safe)
    fits = (lambda x: x <= boundary) if far > safe else (lambda x: x >= boundary)
    got = bisect_fit(fits, safe, far, steps=20)
    assert fits(got) and abs(got - boundary) <= abs(far - safe) / 2 ** 20


def test_the_far_end_is_probed_when_asked():
    probes = []
    assert bisect_fit(recorded(lambda x: True, probes), 0.0, 1.0, 5) == 1.0 and probes == [0.0, 1.0]
    probes.clear()
    assert bisect_fit(recorded(lambda x: True, probes), 0.0, 1.0, 5, far_probe="first") == 1.0 and probes == [1.0]
    probes.clear()
    assert bisect_fit(recorded(lambda x: True, probes), 0.0, 1.0, 3, far_probe="never") == 0.875
    assert probes == [0.0, 0.5, 0.75, 0.875]
    assert bisect_fit(lambda x: False, 0.0, 1.0, 5) is None
