"""The latency1 tier's cases (params.yaml tiers.latency1): int8 vs float32 with one thread."""

import pytest
from matrix import check_row, tier_params


@pytest.mark.parametrize("case", tier_params("latency1"))
def test_case(case, run_case):
    check_row(run_case(case))
