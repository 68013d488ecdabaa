import pytest

from slimbench.budgets import Budget
from slimbench.errors import BudgetError


@pytest.mark.parametrize("cfg,label", [({"params": 100000}, "params100k"), ({"sparsity": 0.9}, "sparsity90"),
                                       ({"bytes": 300000}, "bytes300k"), ({"bits": 8}, "bits8"),
                                       ({"speedup": 2}, "speedup2x"), ({"params": 256779}, "params256779"),
                                       (None, "nobudget")])
def test_labels_are_readable_case_id_parts(cfg, label):
    assert Budget.from_config(cfg).label == label


@pytest.mark.parametrize("cfg,message", [
    ({"params": -5}, "must be positive"),
    ({"sparsity": 1.0}, "must be below 1"),
    ({"bits": 7}, "must be one of"),
    ({"flops": 10}, "unknown budget kind 'flops'"),
    ({"params": "many"}, "not a number"),
    ({"params": 1, "bits": 8}, "one `kind: value` pair"),
])
def test_meaningless_budgets_are_clear_errors(cfg, message):
    with pytest.raises(BudgetError, match=message):
        Budget.from_config(cfg)


def test_budget_checks():
    measured = {"params": 99_000, "sparsity": 0.8995, "size_bytes": 310_000, "weight_bits": 8, "speedup": 1.4}
    assert Budget("params", 100_000).is_met(measured)
    assert Budget("sparsity", 0.9).is_met(measured)  # within the tolerance of global ties
    assert not Budget("sparsity", 0.95).is_met(measured)
    assert not Budget("bytes", 300_000).is_met(measured)
    assert Budget("bits", 8).is_met(measured)
    assert not Budget("speedup", 1.5).is_met(measured)


# Budget.label and Budget.is_met as they were before the kind table (budgets.py at be56903).
def old_label(kind, v):
    if kind == "none":
        return "nobudget"
    if kind == "sparsity":
        return f"sparsity{round(v * 100):g}"
    if kind == "speedup":
        return f"speedup{v:g}x"
    if kind == "macs_speedup":
        return f"macs{v:g}x"
    if kind in ("params", "bytes") and v % 1000 == 0:
        return f"{kind}{v / 1e6:g}m" if v % 1e5 == 0 and v >= 1e6 else f"{kind}{v / 1e3:g}k"
    return f"{kind}{v:g}"


def old_is_met(kind, value, measured):
    if kind == "none":
        return True
    if kind == "params":
        return measured["params"] <= value
    if kind == "sparsity":
        return measured["sparsity"] >= value - 1e-3
    if kind == "bytes":
        return measured["size_bytes"] <= value
    if kind == "bits":
        return measured["weight_bits"] <= value
    if kind == "macs_speedup":
        return measured["reference_macs"] / measured["macs"] >= value
    return measured["speedup"] >= value


def budget_values(kind):
    """Valid values of a kind: round and odd, int and float, tiny and huge, on the k/m edges."""
    if kind == "bits":
        return [1, 2, 4, 8, 16, 32, 8.0, 16.0]
    if kind == "sparsity":
        return [1e-4, 0.001, 0.0049, 0.005, 0.1, 0.125, 0.5, 0.6, 0.8, 0.899, 0.9, 0.9001, 0.95, 0.99, 0.995, 0.9999]
    if kind in ("speedup", "macs_speedup"):
        return [0.5, 1, 1.0, 1.1, 1.25, 1.5, 2, 2.0, 2.5, 3, 3.333, 4, 10, 100.5]
    if kind == "none":
        return [0, 0.0]
    counts = [1, 7, 100, 999, 1000, 1500, 2000, 12_345, 50_000, 99_999, 100_000, 100_000.0, 150_000, 256_779,
              300_000, 999_000, 999_999, 1_000_000, 1_000_000.0, 1_050_000, 1_100_000, 1_250_000, 1_500_000,
              2_000_000, 11_000_000, 123_456_789, 1e9, 1.5e9, 0.5, 1000.5]
    return counts + [float(c) for c in counts if isinstance(c, int)]


def measurements():
    """Harness measurements around every budget value above, and ratios on both sides of 1."""
    out = []
    for params in [0, 1, 999, 1000, 1001, 100_000, 256_779, 1_000_000, 1e9]:
        for sparsity in [0.0, 0.0999, 0.1, 0.5, 0.899, 0.8991, 0.9, 0.95, 0.9989, 0.999]:
            for speed in [0.4, 1.0, 1.25, 1.5, 2.0, 2.4999, 3.0, 120.0]:
                out.append({"params": params, "size_bytes": params * 4 + 1, "weight_bits": [8, 16, 32][int(params) % 3],
                            "sparsity": sparsity, "speedup": speed, "reference_macs": 1_000_000,
                            "macs": 1_000_000 / speed})
    return out


@pytest.mark.parametrize("kind", ["params", "sparsity", "bytes", "bits", "speedup", "macs_speedup", "none"])
def test_the_kind_table_labels_and_judges_as_the_if_chains_did(kind):
    rows = measurements()
    for value in budget_values(kind):
        budget = Budget(kind, value)
        assert budget.label == old_label(kind, value), (kind, value)
        for measured in rows:
            assert budget.is_met(measured) is old_is_met(kind, value, measured), (kind, value, measured)


def test_a_budget_reads_only_the_keys_of_its_kind():
    assert Budget("params", 10).is_met({"params": 10})
    assert Budget("macs_speedup", 2).is_met({"reference_macs": 10, "macs": 5})
    assert Budget("none", 0).is_met({})
