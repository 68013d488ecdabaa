"""Helpers shared by the tier modules: case parameters and the checks every row must pass."""

from __future__ import annotations

import math

import pytest

from slimbench.cases import expand_cases, tier_problems
from slimbench.errors import SlimbenchError


class TierProblems:
    """Stands in for the cases of a tier whose params.yaml entry has problems: collecting it must
    not break the other tiers' collection; selecting it stops the session (conftest.py)."""

    def __init__(self, tier: str, problems: list[str]) -> None:
        self.tier, self.problems = tier, problems
        self.case_id = f"{tier}-config-problems"

    def __repr__(self) -> str:
        return f"TierProblems({self.tier!r}, {len(self.problems)} problem(s))"


def tier_params(tier: str) -> list:
    """pytest params for every case of ``tier``, with readable ids and the tier's marker; a tier
    with problems gives one param (a ``TierProblems``) whose test fails with them. Never raises."""
    mark = getattr(pytest.mark, tier)
    try:
        problems = tier_problems(tier)
        cases = [] if problems else expand_cases(tier)
    except SlimbenchError as exc:  # e.g. malformed YAML: every tier reports it, none is collected
        problems, cases = [str(exc)], []
    if problems:
        return [pytest.param(TierProblems(tier, problems), id=f"{tier}-config-problems", marks=mark)]
    return [pytest.param(case, id=case.case_id, marks=mark) for case in cases]


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
