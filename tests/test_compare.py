"""Regression reports, shard merging and shard assignment."""

import copy
import json

import pytest

from slimbench import cli, compare, leaderboard
from slimbench.cases import Case, shard
from slimbench.errors import ConfigError

ENV = {"torch": "2.14.1", "cpu": "x86 test cpu", "threads": 2, "commit": "abc", "dirty": False}


def row(case_id, top1=90.0, latency=1.0, met=True, reference_latency=2.0, batch_latency=None):
    batch_latency = 10 * latency if batch_latency is None else batch_latency
    return {"case_id": case_id, "top1": top1, "budget_met": met, "params": 100, "size_bytes": 400, "macs": 50,
            "latency_ms": latency, "latency_ms_batch": batch_latency, "speedup": reference_latency / latency,
            "speedup_batch": 10 * reference_latency / batch_latency}


def board(*rows, env=ENV):
    return {"tier": "t", "environment": dict(env), "rows": list(rows)}


@pytest.fixture
def files(tmp_path):
    def write(name, blob):
        path = tmp_path / name
        path.write_text(json.dumps(blob) if not isinstance(blob, str) else blob)
        return str(path)
    return write


def test_an_identical_run_passes(files, capsys):
    base = files("old.json", board(row("a"), row("b")))
    new = files("new.json", board(row("a"), row("b")))
    assert cli.main(["compare", base, new]) == 0
    assert "no regression" in capsys.readouterr().out


def test_a_planted_top1_drop_fails_and_is_named(files, capsys):
    base = files("old.json", board(row("a"), row("b")))
    new = files("new.json", board(row("a"), row("b", top1=89.0)))
    assert cli.main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    assert "b: top-1 90.00 -> 89.00 (drop 1.00 > 0.5)" in out
    assert cli.main(["compare", base, new, "--top1-drop", "2"]) == 0  # threshold option


def test_budget_flips_and_slower_latency_are_regressions_on_the_same_machine():
    old = {"a": row("a"), "b": row("b"), "c": row("c"), "d": row("d")}
    new = {"a": row("a", met=False), "b": row("b", latency=1.2),
           "c": row("c", latency=1.5, reference_latency=3.0),  # a slower machine: the reference slowed too
           "d": row("d", latency=1.3, batch_latency=10.0)}  # slower at batch 1 only: timing noise
    report = compare.compare(old, new, ENV, ENV)
    assert report.regressions == ["a: budget met -> not met",
                                  "b: latency x1.2 / x1.2 (batch 1 / batch) relative to the reference (> 1.1)"]
    other = {**ENV, "cpu": "another cpu"}
    report = compare.compare(old, new, ENV, other)  # timings from another machine are not judged at all
    assert report.regressions == ["a: budget met -> not met"] and not report.timing_comparable
    assert report.environment_diff["cpu"] == ("x86 test cpu", "another cpu")
    assert "not judged" in compare.render(report, "old", "new")


def test_new_and_missing_cases_are_listed():
    report = compare.compare({"a": row("a"), "gone": row("gone")}, {"a": row("a"), "fresh": row("fresh")}, ENV, ENV)
    assert report.new_cases == ["fresh"] and report.missing_cases == ["gone"] and not report.regressions


@pytest.mark.parametrize("content,message", [
    ("{not json", "unreadable leaderboard"),
    (json.dumps({"rows": [{"case_id": "a"}]}), "rows lack \\['budget_met', 'top1'\\]"),
])
def test_malformed_input_exits_2_with_a_clear_message(files, capsys, content, message):
    base = files("old.json", board(row("a")))
    bad = files("bad.json", content)
    assert cli.main(["compare", base, bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimbench: error: ") and len(err.strip().splitlines()) == 1
    import re
    assert re.search(message, err)


def test_a_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "no leaderboard at" in capsys.readouterr().err


def test_merge_joins_shards_and_refuses_duplicates(files):
    full = {**{k: 0 for k in leaderboard.ROW_KEYS}, **row("a")}
    one = files("s1.json", {"benchmarks": [{"extra_info": full}]})
    two = files("s2.json", board(row("b")))
    assert [r["case_id"] for r in leaderboard.merge_sources([one, two])] == ["a", "b"]
    again = files("s3.json", board(copy.deepcopy(row("b"))))
    with pytest.raises(ConfigError, match="case b is in both .*s2.json and .*s3.json"):
        leaderboard.merge_sources([one, two, again])


def test_every_case_is_in_exactly_one_shard():
    cases = [Case(case_id=f"case-{i}", tier="t", method="reference", dataset="digits", model="reference")
             for i in range(40)]
    shards = [shard(cases, f"{i}/4") for i in range(1, 5)]
    ids = [c.case_id for part in shards for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases)  # each once, none lost
    assert all(part for part in shards)  # 40 cases spread over all 4 shards
    assert shard(cases[:7], "2/4") == [c for c in shards[1] if c in cases[:7]]  # stable whatever else is in the tier


def test_the_pareto_front_keeps_only_undominated_points():
    from slimbench.plots import pareto_front
    points = [(10, 80.0), (20, 85.0), (15, 79.0), (30, 84.0), (40, 90.0), (10, 70.0)]
    assert pareto_front(points) == [(10, 80.0), (20, 85.0), (40, 90.0)]


def test_calibration_curves_need_two_sizes_per_line(tmp_path):
    from slimbench.plots import calibration_curves

    def q(size, top1, observer="minmax"):
        return {"family": "quant", "dataset": "d", "model": "m", "method": "quant_ptq_int8", "top1": top1,
                "reference_top1": 90.0, "settings": {"observer": observer}, "study": "Q1",
                "method_log": {"calibration_images": size}}

    assert calibration_curves([q(100, 80.0), q(1000, 81.0, "histogram")], tmp_path) == []  # one size per line
    assert calibration_curves([q(100, 80.0), q(100, 81.0)], tmp_path) == []  # a sweep of something else
    (path,) = calibration_curves([q(100, 80.0), q(1000, 81.0), q(100, 79.0, "histogram")], tmp_path)
    assert path.name == "calibration_d_m.png" and path.stat().st_size > 0


def test_dvc_metrics_are_numbers_by_case():
    rows = [{**row("a"), "val_top1": 91.0, "nonzero_params": 50, "speedup": 1.5, "speedup_batch": None}]
    assert leaderboard.dvc_metrics(rows) == {"a": {"top1": 90.0, "val_top1": 91.0, "params": 100, "nonzero_params": 50,
                                                   "size_bytes": 400, "macs": 50, "latency_ms": 1.0, "speedup": 1.5}}
