"""The paper tier's cases (params.yaml tiers.paper)."""

import pytest
from matrix import check_row, tier_params


@pytest.mark.parametrize("case", tier_params("paper"))
def test_case(case, run_case):
    check_row(run_case(case))
