"""The matrix's parameters: the tiers of params.yaml, each tier's cases (or its config problems),
and the checks every row must pass. test_tiers.py makes one test per tier from them; conftest.py
registers one marker per tier and puts it on the tier's cases."""

from __future__ import annotations

import math

import pytest

from slimbench.cases import expand_cases, tier_problems
from slimbench.config import load_params
from slimbench.errors import SlimbenchError


def params_tiers() -> tuple[list[str], list[str]]:
    """(the tier names of params.yaml in its order, the problems that keep them from being read:
    an unreadable params.yaml, a ``tiers`` that is not a mapping). Never raises."""
    try:
        tiers = load_params().get("tiers") or {}
    except SlimbenchError as exc:
        return [], [str(exc)]
    if not isinstance(tiers, dict):
        return [], tier_problems("")  # its one line for a ``tiers`` that is not a mapping
    return [str(name) for name in tiers], []


def marker_line(tier: str) -> str:
    """The ``markers`` ini line of a tier (pyproject.toml has --strict-markers)."""
    return f"{tier}: benchmark cases of the {tier} tier (params.yaml tiers.{tier})"


class TierProblems:
    """Stands in for the cases of a tier whose params.yaml entry has problems: collecting it must
    not break the other tiers' collection; selecting it stops the session (conftest.py)."""

    def __init__(self, tier: str, problems: list[str]) -> None:
        self.tier, self.problems = tier, problems
        self.case_id = f"{tier}-config-problems"

    def __repr__(self) -> str:
        return f"TierProblems({self.tier!r}, {len(self.problems)} problem(s))"


def tier_params(tier: str) -> list:
    """pytest params for every case of ``tier``, the case ids as ids; a tier with problems gives one
    param (a ``TierProblems``) whose test fails with them. Never raises. Each collected case gets
    its tier's marker from conftest.py (``pytest_itemcollected``), where the markers are registered."""
    try:
        problems = tier_problems(tier)
        cases = [] if problems else expand_cases(tier)
    except SlimbenchError as exc:  # e.g. malformed YAML: every tier reports it, none is collected
        problems, cases = [str(exc)], []
    if problems:
        return [pytest.param(TierProblems(tier, problems), id=f"{tier}-config-problems")]
    return [pytest.param(case, id=case.case_id) for case in cases]


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
