"""The benchmark matrix: one test per tier of params.yaml (``test_<tier>``), one param per case,
its id the case id and its marker the tier's (select with `-m <tier>` or `--tier <tier>`). A tier
whose params.yaml entry has problems is one failing param (a ``TierProblems``) that stops the
session only when that tier is selected."""

import pytest
from matrix import check_row, params_tiers, tier_params


def tier_test(tier: str):
    """The test of one tier's cases: compress (or load from the cache), time, check the row."""

    @pytest.mark.parametrize("case", tier_params(tier))
    def test(case, run_case):
        check_row(run_case(case))

    test.__name__ = test.__qualname__ = f"test_{tier}"
    test.__doc__ = f"A case of the {tier} tier (params.yaml tiers.{tier})."
    return test


for _tier in params_tiers()[0]:
    globals()[f"test_{_tier}"] = tier_test(_tier)
