"""Regression reports, shard merging and shard assignment."""

import base64
import copy
import json

import numpy as np
import pytest

from slimbench import cli, compare, leaderboard
from slimbench.render import dvc_metrics
from slimbench.rows import ROW_KEYS, rows_from_benchmark_json
from slimbench.cases import Case, shard
from slimbench.errors import ConfigError

ENV = {"torch": "2.14.1", "cpu": "x86 test cpu", "cpu_flags_md5": "f", "cpu_cores": 2, "cpu_caches": "L2 1M",
       "threads": 2, "commit": "abc", "dirty": False}
LABELS = np.arange(1000) % 10


def predictions(wrong: int, offset: int = 0) -> str:
    """Transport copy of 1,000 predictions: images offset..offset+wrong-1 misclassified."""
    pred = LABELS.copy()
    pred[offset:offset + wrong] = (pred[offset:offset + wrong] + 1) % 10
    return base64.b64encode(np.stack([pred, LABELS]).astype(np.uint8).tobytes()).decode()


def turns(case_ms, reference_ms, n=30, seed=0, noise=0.03):
    """Raw per-turn times with relative noise (seeded), as measure() stores them."""
    rng = np.random.default_rng(seed)
    return {"case": list(case_ms * (1 + noise * rng.standard_normal(n))),
            "reference": list(reference_ms * (1 + noise * rng.standard_normal(n)))}


def row(case_id, top1=90.0, latency=1.0, met=True, reference_latency=2.0, batch_latency=None, **extra):
    batch_latency = 10 * latency if batch_latency is None else batch_latency
    return {"case_id": case_id, "top1": top1, "budget_met": met, "params": 100, "size_bytes": 400, "macs": 50,
            "latency_ms": latency, "latency_ms_batch": batch_latency, "speedup": reference_latency / latency,
            "speedup_batch": 10 * reference_latency / batch_latency, **extra}


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


def test_a_significant_top1_drop_fails_and_is_named(files, capsys):
    # 100 -> 120 wrong of 1,000 on the same images: 20 lost, none gained; McNemar p = 2 / 2^20
    base = files("old.json", board(row("a", predictions_b64=predictions(100)),
                                   row("b", predictions_b64=predictions(100))))
    new = files("new.json", board(row("a", predictions_b64=predictions(100)),
                                  row("b", top1=88.0, predictions_b64=predictions(120))))
    assert cli.main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    assert "b: top-1 90.00 -> 88.00 (drop 2.00 > 0.5; McNemar exact p=1.9e-06 < 0.01: 20 images lost, 0 gained" in out
    assert cli.main(["compare", base, new, "--top1-drop", "2.5"]) == 0  # threshold option


def test_a_drop_within_the_noise_is_reported_but_passes(files, capsys):
    # images 0-99 wrong before; now 0-59 right again and 100-169 newly wrong: 70 lost, 60 gained (p = 0.43)
    new = LABELS.copy()
    new[60:170] = (new[60:170] + 1) % 10
    new_pred = base64.b64encode(np.stack([new, LABELS]).astype(np.uint8).tobytes()).decode()
    base = files("old.json", board(row("a", predictions_b64=predictions(100))))
    changed = files("new.json", board(row("a", top1=89.0, predictions_b64=new_pred)))
    assert cli.main(["compare", base, changed]) == 0
    out = capsys.readouterr().out
    assert "within the noise" in out and "70 images lost, 60 gained" in out


def test_without_predictions_wilson_intervals_decide():
    old = {"a": row("a", top1=90.0, test_size=359), "b": row("b", top1=90.0, test_size=10000)}
    new = {"a": row("a", top1=89.4, test_size=359), "b": row("b", top1=88.0, test_size=10000)}
    report = compare.compare(old, new, ENV, ENV)
    assert [r.split(":")[0] for r in report.regressions] == ["b"]  # 2 points of 10,000 images: apart
    assert "overlap" in report.within_noise[0] and report.within_noise[0].startswith("a:")  # 2 images of 359


def test_latency_regressions_need_both_batch_sizes_and_significance():
    same = {"b1": turns(1.0, 2.0, seed=1), "batch": turns(10.0, 20.0, seed=2)}
    old = {k: row(k, latency_samples_ms=same) for k in "abcd"}
    new = {
        "a": row("a", latency_samples_ms={"b1": turns(1.0, 2.0, seed=3), "batch": turns(10.0, 20.0, seed=4)}),
        "b": row("b", latency_samples_ms={"b1": turns(1.5, 2.0, seed=5), "batch": turns(15.0, 20.0, seed=6)}),
        "c": row("c", latency_samples_ms={"b1": turns(3.0, 6.0, seed=7), "batch": turns(30.0, 60.0, seed=8)}),
        "d": row("d", latency_samples_ms={"b1": turns(1.5, 2.0, seed=9), "batch": turns(10.0, 20.0, seed=10)}),
    }
    # e: about x1.12 / x1.18 with 8% noise per turn: p < 0.01, but the batch-1 interval reaches below 1.1
    new["e"] = row("e", latency_samples_ms={"b1": turns(1.18, 2.0, seed=11, noise=0.08),
                                            "batch": turns(11.8, 20.0, seed=12, noise=0.08)})
    old["e"] = row("e", latency_samples_ms={"b1": turns(1.0, 2.0, seed=13, noise=0.08),
                                            "batch": turns(10.0, 20.0, seed=14, noise=0.08)})
    report = compare.compare(old, new, ENV, ENV)
    assert [r.split(":")[0] for r in report.regressions] == ["b"]  # 1.5x slower at both batch sizes
    assert "Mann-Whitney p=" in report.regressions[0]
    # c: the whole machine 3x slower (reference too) cancels; d: slower at batch 1 only
    assert [r.split(":")[0] for r in report.within_noise] == ["e"]


def test_medians_decide_when_raw_turns_are_missing():
    old = {"a": row("a"), "b": row("b"), "c": row("c"), "d": row("d")}
    new = {"a": row("a", met=False), "b": row("b", latency=1.2),
           "c": row("c", latency=1.5, reference_latency=3.0),  # a slower machine: the reference slowed too
           "d": row("d", latency=1.3, batch_latency=10.0)}  # slower at batch 1 only: timing noise
    report = compare.compare(old, new, ENV, ENV)
    assert report.regressions == ["a: budget met -> not met",
                                  "b: latency x1.2 / x1.2 (batch 1 / batch) relative to the reference (> 1.1; "
                                  "medians only: no raw turn times in one of the boards)"]
    for key, value in (("cpu", "another cpu"), ("cpu_flags_md5", "g"), ("cpu_caches", "L2 2M")):
        report = compare.compare(old, new, ENV, {**ENV, key: value})  # another machine: timings not judged
        assert report.regressions == ["a: budget met -> not met"] and not report.timing_comparable
    assert report.environment_diff["cpu_caches"] == ("L2 1M", "L2 2M")
    assert "not judged" in compare.render(report, "old", "new")


def test_missing_cases_fail_unless_allowed(files, capsys):
    base = files("old.json", board(row("a"), row("gone")))
    new = files("new.json", board(row("a"), row("fresh")))
    assert cli.main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    assert "1 case(s) missing" in out and "gone" in out and "fresh" in out
    assert cli.main(["compare", base, new, "--allow-missing"]) == 0


def test_cases_without_a_model_in_the_cache_are_listed_not_judged(files, capsys):
    base = files("old.json", board(row("a"), row("stale"), row("absent")))
    # `stale` keeps an earlier run's row (a drop that would be a regression), `absent` has none
    new = files("new.json", {**board(row("a"), row("stale", top1=10.0)), "uncached_cases": ["absent", "stale"]})
    assert cli.main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    assert "**no regression**, **2 model(s) not in the cache**" in out
    assert "## Models not in the cache" in out and "absent, stale" in out and "## Missing cases" not in out
    assert cli.main(["compare", base, new, "--allow-missing"]) == 0


def test_a_shard_compares_with_its_own_part_of_the_baseline(files):
    ids = [f"case-{i}" for i in range(12)]
    base = files("old.json", board(*[row(i) for i in ids]))
    part = [c.case_id for c in shard([Case(case_id=i, tier="t", method="reference", dataset="digits",
                                           model="reference") for i in ids], "1/3")]
    new = files("new.json", board(*[row(i) for i in part]))
    assert 0 < len(part) < len(ids)
    assert cli.main(["compare", base, new]) == 1  # the other shards' cases are missing
    assert cli.main(["compare", base, new, "--shard", "1/3"]) == 0


def test_predictions_sidecars_are_written_and_checked(tmp_path):
    rows = [{"case_id": "a", "predictions_b64": predictions(3), "predictions_md5": None}]
    pred = np.frombuffer(base64.b64decode(rows[0]["predictions_b64"]), dtype=np.uint8).reshape(2, -1)
    import hashlib
    rows[0]["predictions_md5"] = hashlib.md5(pred[0].tobytes()).hexdigest()
    leaderboard.store_predictions(tmp_path, rows)
    assert "predictions_b64" not in rows[0] and (tmp_path / "a.npy").is_file()
    assert np.array_equal(leaderboard.load_predictions(tmp_path, rows[0]), pred)
    assert leaderboard.load_predictions(tmp_path, {**rows[0], "predictions_md5": "0" * 32}) is None  # md5 mismatch
    leaderboard.store_predictions(tmp_path, [])  # the case left the board: its sidecar goes
    assert not (tmp_path / "a.npy").exists()


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
    full = {**{k: 0 for k in ROW_KEYS}, **row("a")}
    one = files("s1.json", {"benchmarks": [{"extra_info": full}]})
    two = files("s2.json", board(row("b")))
    assert [r["case_id"] for r in leaderboard.merge_sources([one, two])] == ["a", "b"]
    again = files("s3.json", board(copy.deepcopy(row("b"))))
    with pytest.raises(ConfigError, match="case b is in both .*s2.json and .*s3.json"):
        leaderboard.merge_sources([one, two, again])


def test_one_reader_serves_report_merge_and_compare(files):
    """A benchmark JSON's rows are read by rows.py for `report`/`merge` and for `compare` alike; a
    failed case's timing (no case_id in extra_info) carries no row; compare needs fewer keys."""
    full = {**{k: 0 for k in ROW_KEYS}, **row("a", environment=ENV)}
    path = files("run.json", {"benchmarks": [{"extra_info": full}, {"extra_info": {"failed_case_id": "b"}}],
                              "machine_info": {"cpu": "other"}})
    assert rows_from_benchmark_json(path) == [full]
    board = compare.load_board(path)
    assert board.rows == {"a": full} and board.environment == ENV
    assert set(compare.NEEDED) <= set(ROW_KEYS)
    lacking = files("lacking.json", {"benchmarks": [{"extra_info": row("a")}]})
    with pytest.raises(ConfigError, match="case a lacks \\['method', 'family'"):
        rows_from_benchmark_json(lacking)
    assert list(compare.load_board(lacking).rows) == ["a"]  # what a comparison reads is there


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
    assert dvc_metrics(rows) == {"a": {"top1": 90.0, "val_top1": 91.0, "params": 100, "nonzero_params": 50,
                                       "size_bytes": 400, "macs": 50, "latency_ms": 1.0, "speedup": 1.5}}
