"""Helpers shared by the tier modules: case parameters and the checks every row must pass."""

from __future__ import annotations

import math

import pytest

from slimbench.cases import expand_cases


def tier_params(tier: str) -> list:
    """pytest params for every case of ``tier``, with readable ids and the tier's marker."""
    return [pytest.param(case, id=case.case_id, marks=getattr(pytest.mark, tier)) for case in expand_cases(tier)]


def check_row(row: dict) -> None:
    """A trained model at chance level means the pipeline broke, not that compression lost accuracy.

    Pruning without fine-tuning may legitimately collapse at high rates: there the check is that
    the sparsity reached is the one asked for.
    """
    chance = 100.0 / row["num_classes"]
    if row["budget_kind"] == "sparsity":
        assert row["sparsity"] >= row["budget_value"] - 1e-3, f"{row['case_id']}: sparsity {row['sparsity']}"
    else:
        assert row["top1"] > chance, f"{row['case_id']}: top-1 {row['top1']}% is at chance level ({chance:.1f}%)"
    assert isinstance(row["budget_met"], bool)
    assert row["params"] > 0 and row["size_bytes"] > 0 and row["macs"] > 0
    assert math.isfinite(row["latency_ms"]) and row["latency_ms"] > 0
