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
