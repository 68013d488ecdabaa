"""The standard tier's cases (params.yaml tiers.standard)."""

import pytest
from matrix import check_row, tier_params


@pytest.mark.parametrize("case", tier_params("standard"))
def test_case(case, run_case):
    check_row(run_case(case))
