"""The headlines table (slimbench.headlines) on a small fake board."""

from __future__ import annotations

import json

import pytest

from slimbench.errors import ConfigError
from slimbench.headlines import HEADLINES, Headline, outcomes, render, render_board


def _row(case_id: str, top1: float, reference: float, group: str | None = None, met: bool = True) -> dict:
    return {"case_id": case_id, "group_id": group or case_id, "top1": top1, "reference_top1": reference,
            "budget_met": met, "study": "H"}


FMNIST = "kd_logits-fashion_mnist-params100k-hl"
BOARD = [
    _row(f"{FMNIST}-seed0", 93.6, 94.91, FMNIST), _row(f"{FMNIST}-seed1", 93.4, 94.91, FMNIST),
    _row(f"{FMNIST}-seed2", 93.8, 94.91, FMNIST),
    _row("prune_iterative-cifar10_jpeg-sparsity92-hl", 86.77, 87.97),
    _row("kd_logits-fashion_mnist-params100k-hl-w1", 99.0, 94.91),  # an ablation: not the headline's group
]


def _cells(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_seeds_give_mean_and_std_and_the_gap_to_the_course():
    table = render(BOARD)
    name, course, ours, gap, target, met, rerun = _cells(table, HEADLINES[0].name)
    assert course == "93.30% (teacher 92.4%)"
    assert ours == "93.60 ± 0.20%, 3 seeds" and gap == "+0.30"
    assert target == "top-1 >= 93.5%, mean of 3 seeds" and met == "yes"
    assert rerun == ("`slimbench compress --tier standard --case 'kd_logits-fashion_mnist-params100k-hl-seed*' "
                     "--device cuda --jobs 3` then `slimbench run --tier standard --cached-only "
                     "--case 'kd_logits-fashion_mnist-params100k-hl-seed*'`")


def test_a_drop_row_reports_points_lost_and_its_target():
    _, _, ours, gap, target, met, _ = _cells(render(BOARD), HEADLINES[1].name)
    assert ours == "-1.20 points (86.77% from 87.97%)" and gap == "+0.84"  # course lost 2.04
    assert target == "within 1.5 points" and met == "yes"
    better = [dict(r, top1=88.47) if r["case_id"].startswith("prune_iterative") else r for r in BOARD]
    assert _cells(render(better), HEADLINES[1].name)[2] == "+0.50 points (88.47% from 87.97%)"  # a gain


def test_missing_rows_are_not_yet_run_never_a_number():
    _, _, ours, gap, _, met, _ = _cells(render(BOARD), HEADLINES[2].name)
    assert (ours, gap, met) == ("not yet run", "—", "not yet run")
    assert render([]).count("not yet run") == 2 * len(HEADLINES)


def test_too_few_seeds_or_a_missed_budget_is_not_met():
    two = render(BOARD[:2])
    assert _cells(two, HEADLINES[0].name)[5] == "no (2 of 3 seeds)"
    over = [dict(r, budget_met=False) if r["case_id"].startswith("prune_iterative") else r for r in BOARD]
    assert _cells(render(over), HEADLINES[1].name)[5] == "no (budget not met)"
    worse = [dict(r, top1=84.0) if r["case_id"].startswith("prune_iterative") else r for r in BOARD]
    _, _, ours, gap, _, met, _ = _cells(render(worse), HEADLINES[1].name)
    assert (gap, met) == ("-1.93", "no")


def test_rows_are_matched_by_group_only():
    matched = outcomes(BOARD)
    assert [len(o.rows) for o in matched] == [3, 1, 0]
    assert matched[0].mean == pytest.approx(93.6) and matched[0].std == pytest.approx(0.2)


def test_bad_definitions_and_boards_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown metric 'top5'; valid: top1, drop"):
        Headline("x", "y", 1.0, "g", "g", "top5", 1.0)
    with pytest.raises(ConfigError, match="unreadable board .*; fix: run `slimbench run --tier standard` first"):
        render_board(str(tmp_path / "missing.json"))
    board = tmp_path / "leaderboard.json"
    board.write_text(json.dumps({"rows": BOARD}))
    assert render_board(str(board)) == render(BOARD)
