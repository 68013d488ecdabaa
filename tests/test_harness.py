"""The harness on a throwaway project: cases from params.yaml, caching, rows, leaderboards."""

import json

import pytest
from conftest import mini_params, write_project
import torch
import yaml

from slimbench import harness, leaderboard, metrics, render, rows
from slimbench.cases import expand_cases, load_tier, select
from slimbench.errors import ConfigError

PARAMS = mini_params([{"method": "reference"},
                      {"method": "prune_global_magnitude", "budgets": [{"sparsity": 0.5}, {"sparsity": 0.9}]},
                      {"method": "quant_ptq_int8", "budget": {"bytes": 1000}, "settings": {"calibration_size": 64}}])


@pytest.fixture
def project(tmp_path, digits_model):
    return write_project(tmp_path, PARAMS, digits_model)


def test_cases_expand_with_readable_unique_ids(project):
    ids = [c.case_id for c in expand_cases("mini", project)]
    assert ids == ["reference-digits-nobudget", "prune_global_magnitude-digits-sparsity50",
                   "prune_global_magnitude-digits-sparsity90", "quant_ptq_int8-digits-bytes1k"]
    assert [c.case_id for c in select(expand_cases("mini", project), "prune_*")] == ids[1:3]


def test_malformed_tiers_are_clear_errors(project):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tiers"]["mini"]["cases"].append({"method": "reference"})
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="duplicate case id 'reference-digits-nobudget'.*add a distinct `tag`"):
        expand_cases("mini", project)
    params["tiers"]["mini"]["cases"][-1] = {"method": "reference", "datasets": ["food11"]}
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="dataset 'food11' is not declared in tier mini"):
        expand_cases("mini", project)
    with pytest.raises(ConfigError, match="unknown tier 'huge'; valid tiers: mini"):
        load_tier("huge", project)


def test_rows_are_measured_and_cached_per_case(project):
    case = expand_cases("mini", project)[2]  # 90% sparsity
    first = harness.compress_case(case, project)
    assert not first.cache_hit
    again = harness.compress_case(case, project)
    assert again.cache_hit and again.quality == first.quality
    row = harness.measure(case, again, load_tier("mini", project))
    assert set(rows.ROW_KEYS) <= set(row)
    assert row["family"] == "prune" and row["budget_met"] is True and row["sparsity"] >= 0.899
    assert row["nonzero_params"] < 0.2 * row["params"] and row["top1_delta"] == round(row["top1"] - row["reference_top1"], 2)


def test_an_unmet_budget_is_reported_not_raised(project):
    case = expand_cases("mini", project)[3]  # int8 model in 1,000 bytes: impossible
    row = harness.measure(case, harness.compress_case(case, project), load_tier("mini", project))
    assert row["budget_met"] is False and row["size_bytes"] > 1000


def test_cache_key_changes_with_the_case_config(project):
    a, b = expand_cases("mini", project)[1:3]
    assert harness.cache_key(a, "d", "t") != harness.cache_key(b, "d", "t")
    assert harness.cache_key(a, "d", "t") != harness.cache_key(a, "other-data", "t")


def test_an_interrupted_store_leaves_no_cache_entry(project, monkeypatch):
    reference, case = expand_cases("mini", project)[:2]
    harness.compress_case(reference, project)  # data prepared and teacher loaded before the failure

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        harness.compress_case(case, project)
    case_dir = project.cache / "mini" / case.case_id
    assert not any(case_dir.iterdir()) if case_dir.exists() else True


def _row(case_id, top1=90.0, **extra):
    return {**{k: 0 for k in rows.ROW_KEYS}, "case_id": case_id, "dataset": "digits", "top1": top1,
            "budget_kind": "none", "budget_value": 0, "budget_met": True, **extra}


def test_leaderboard_update_keeps_other_rows_and_drops_retired_cases(project, tmp_path):
    out = tmp_path / "results"
    leaderboard.update(out, "mini", [_row("a"), _row("b"), _row("gone")], ["a", "b", "gone"], project.root)
    board = leaderboard.update(out, "mini", [_row("b", top1=95.0)], ["a", "b"], project.root)
    assert [(r["case_id"], r["top1"]) for r in board["rows"]] == [("a", 90.0), ("b", 95.0)]
    saved = json.loads((out / "leaderboard.json").read_text())
    assert {"tier", "commit", "created", "environment", "rows"} <= set(saved)
    assert {"torch", "cpu", "threads"} <= set(saved["environment"])
    assert (out / "leaderboard.csv").read_text().splitlines()[0].startswith("case_id,method,family,dataset")
    assert "## digits" in (out / "LEADERBOARD.md").read_text()


def test_a_failed_write_keeps_the_previous_leaderboard(project, tmp_path, monkeypatch):
    out = tmp_path / "results"
    leaderboard.update(out, "mini", [_row("a")], ["a"], project.root)
    before = (out / "leaderboard.json").read_text()
    monkeypatch.setattr(leaderboard.json, "dump", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        leaderboard.update(out, "mini", [_row("a", top1=1.0)], ["a"], project.root)
    assert (out / "leaderboard.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_rows_from_a_benchmark_json_must_carry_the_schema(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [{"extra_info": {"case_id": "x", "top1": 1}}]}))
    with pytest.raises(ConfigError, match="case x lacks .*method"):
        leaderboard.rows_from_benchmark_json(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable benchmark JSON"):
        leaderboard.rows_from_benchmark_json(path)


def test_readme_excerpt_is_replaced_between_markers(project, tmp_path):
    board = leaderboard.update(tmp_path / "r", "mini", [_row("a", top1=91.5)], ["a"], project.root)
    readme = tmp_path / "README.md"
    start, end = render.excerpt_markers("mini")
    readme.write_text(f"intro\n{start}\nSTALE-ROW\n{end}\noutro\n")
    render.update_readme_excerpt(readme, board, ["digits"])
    text = readme.read_text()
    assert "STALE-ROW" not in text and "91.50" in text and text.startswith("intro") and text.endswith("outro\n")
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="lacks the .* markers"):
        render.update_readme_excerpt(readme, board, ["digits"])


def test_a_page_with_only_the_runtime_markers_gets_the_runtime_table(project, tmp_path):
    timed = _row("a", top1=91.5, runtimes=["eager", "onnxruntime"], latency_ms_onnxruntime=0.25,
                 top1_onnxruntime=91.4)
    board = leaderboard.update(tmp_path / "r", "mini", [timed], ["a"], project.root)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- runtimes:mini:start -->\nSTALE\n<!-- runtimes:mini:end -->\n")
    render.update_readme_excerpt(readme, board, ["digits"])
    text = readme.read_text()
    assert "STALE" not in text and "onnxruntime b1 ms (x ref)" in text and "91.50" in text and "| 0.25 " in text


def test_code_md5_covers_the_method_module_its_imports_and_the_harness_side():
    from pathlib import Path

    package = Path(harness.__file__).parent
    for entry in harness.HARNESS_SOURCES:
        assert (package / entry).exists(), entry
    sources = harness.code_sources("kd_logits")
    assert {"methods/distill.py", "methods/base.py", "budgets.py", "training.py", "determinism.py",
            "datasets/digits.py", "models/cnn.py"} <= set(sources)
    assert not {"metrics.py", "methods/arch.py", "methods/__init__.py", "harness.py"} & set(sources)
    assert harness.code_md5("kd_logits") == harness.code_md5("kd_hint")  # same module, distill.py
    assert harness.code_md5("kd_logits") != harness.code_md5("lowrank_svd")


def test_quantized_models_are_cached_and_restored(project):
    case = expand_cases("mini", project)[3]
    first, second = harness.compress_case(case, project), harness.compress_case(case, project)
    assert not first.cache_hit and second.cache_hit
    assert metrics.model_md5(second.model) == metrics.model_md5(first.model)


def test_a_corrupt_cache_entry_is_recomputed_and_replaced(project, capsys):
    case = expand_cases("mini", project)[1]
    harness.compress_case(case, project)
    (entry,) = (project.cache / "mini" / case.case_id).iterdir()
    (entry / "state.pt").write_bytes(b"truncated")
    again = harness.compress_case(case, project)
    assert not again.cache_hit
    assert "state.pt" in capsys.readouterr().out
    assert harness.compress_case(case, project).cache_hit  # the entry was rewritten whole


def test_seeded_study_cases_share_a_group_and_a_cache_key_ignores_labels(project):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tiers"]["mini"]["cases"].append({"method": "scratch", "model": "fashion_cnn", "seeds": [0, 1, 2],
                                             "model_kwargs": {"image_size": 8}, "study": "s1", "teacher": "t"})
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    seeded = [c for c in expand_cases("mini", project) if c.study == "s1"]
    assert [c.case_id for c in seeded] == [f"scratch-digits-nobudget-seed{i}" for i in range(3)]
    assert {c.group_id for c in seeded} == {"scratch-digits-nobudget"}
    assert len({c.config_hash() for c in seeded}) == 3  # seeds differ
    from dataclasses import replace
    assert replace(seeded[0], study="other").config_hash() == seeded[0].config_hash()


def test_summary_rows_average_the_seeds_of_a_group():
    base = {"study": "s1", "group_id": "g", "method": "kd_logits", "family": "distill", "dataset": "d",
            "budget_met": True, "params": 10, "nonzero_params": 10, "size_bytes": 100, "macs": 5, "sparsity": 0.0,
            "latency_ms": 1.0, "latency_ms_batch": 2.0, "train_seconds": 3.0, "val_top1": 90.0}
    rows = [{**base, "seed": s, "top1": t} for s, t in [(0, 90.0), (1, 92.0), (2, 94.0)]]
    rows.append({**base, "group_id": "other", "study": None, "seed": 0, "top1": 10.0})
    (summary,) = leaderboard.summarize(rows)
    assert summary["top1"] == 92.0 and summary["top1_std"] == 2.0 and summary["seeds"] == [0, 1, 2]
    assert "± 2.00" in render.render_studies([summary])


def test_shards_partition_the_cases_stably(project):
    from slimbench.cases import shard
    cases = expand_cases("mini", project)
    parts = [shard(cases, f"{i}/3") for i in (1, 2, 3)]
    ids = sorted(c.case_id for part in parts for c in part)
    assert ids == sorted(c.case_id for c in cases)  # every case in exactly one shard
    assert [c.case_id for c in shard(cases[1:], "2/3")] == [c.case_id for c in parts[1] if c in cases[1:]]
    with pytest.raises(ConfigError, match="is not i/n"):
        shard(cases, "4/3")


def test_rate_curves_are_drawn_per_dataset(tmp_path):
    from slimbench.plots import rate_curves
    rows = [{"family": "prune", "budget_kind": "sparsity", "dataset": "d", "method": m, "settings": {},
             "nonzero_params": n, "val_top1": acc} for m in ("prune_l1_layer", "prune_global_magnitude") for n, acc in ((100, 50.0), (1000, 80.0))]
    rows.append({"family": "baseline", "budget_kind": "none", "dataset": "d", "method": "reference", "val_top1": 90.0})
    (path,) = rate_curves(rows, tmp_path)
    assert path.name == "rate_curves_d.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert rate_curves([r for r in rows if r["family"] != "prune"], tmp_path) == []


def _add_cases(project, *entries):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tiers"]["mini"]["cases"] += list(entries)
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))


def test_a_case_can_start_from_another_cases_model(project):
    _add_cases(project, {"method": "prune_global_magnitude", "budget": {"sparsity": 0.95}, "tag": "more",
                         "from_case": "prune_global_magnitude-digits-sparsity90"})
    cases = {c.case_id: c for c in expand_cases("mini", project)}
    upstream, chained = cases["prune_global_magnitude-digits-sparsity90"], cases["prune_global_magnitude-digits-sparsity95-more"]
    assert (chained.model, chained.teacher) == (upstream.model, upstream.teacher)  # the upstream's lineage
    assert harness.compress_case(chained, project, cached_only=True) is None  # upstream not made yet
    first = harness.compress_case(upstream, project)
    outcome = harness.compress_case(chained, project)
    assert outcome.quality["reference_top1"] == first.quality["top1"]  # the reference is the upstream model
    zeros = {name: w == 0 for name, w in metrics.prunable_weights(first.model)}
    assert all(torch.all(w[zeros[name]] == 0) for name, w in metrics.prunable_weights(outcome.model))  # stay zero
    row = harness.measure(chained, outcome, load_tier("mini", project))
    assert row["from_case"] == upstream.case_id and row["sparsity"] >= 0.949
    assert harness.compress_case(chained, project).cache_hit
    assert outcome.key == harness.cache_key(chained, outcome.data.data_md5, outcome.reference_meta["md5"], first.key)
    assert outcome.key != harness.cache_key(chained, outcome.data.data_md5, outcome.reference_meta["md5"], "other")


@pytest.mark.parametrize("entry,message", [
    ({"method": "prune_global_magnitude", "budget": {"sparsity": 0.95}, "from_case": "nope"},
     "from_case 'nope' is not a case of tier mini"),
    ({"method": "pipeline_kd_quant", "budget": {"bytes": 9000}},
     "starts from another case's model; fix: set `from_case:`"),
    ({"method": "pipeline_kd_quant", "budget": {"bytes": 9000}, "from_case": "reference-digits-nobudget"},
     "starts from a distill case, but reference-digits-nobudget is baseline"),
])
def test_bad_from_case_links_are_clear_errors(project, entry, message):
    _add_cases(project, entry)
    with pytest.raises(ConfigError, match=message):
        expand_cases("mini", project)


def test_the_same_case_retrained_from_an_empty_cache_gives_identical_weights(project):
    """Determinism: seed, machine and thread count fix the weights, whatever the process drew before."""
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tiers"]["mini"]["cases"].append({"method": "scratch", "model": "fashion_cnn", "datasets": ["digits"],
                                             "model_kwargs": {"image_size": 8}, "budget": {"params": 100000},
                                             "recipe": {"augment": "crop_flip"}})
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    case = expand_cases("mini", project)[-1]
    md5s, rows = [], []
    for draws in (0, 17):
        torch.rand(draws)  # a different state of the process's global generator
        outcome = harness.compress_case(case, project)
        assert not outcome.cache_hit
        md5s.append(metrics.model_md5(outcome.model))
        rows.append(harness.measure(case, outcome, load_tier("mini", project)))
        (project.cache / "mini").rename(project.root / f"cache-{draws}")  # empty the cache again
    assert md5s[0] == md5s[1] == rows[0]["model_md5"] == rows[1]["model_md5"]
    assert rows[0]["top1"] == rows[1]["top1"] and rows[0]["predictions_md5"] == rows[1]["predictions_md5"]


def test_the_thread_count_is_part_of_the_cache_key(project):
    case = expand_cases("mini", project)[1]
    assert harness.cache_key(case, "d", "t", threads=1) != harness.cache_key(case, "d", "t", threads=2)


def test_rows_carry_intervals_and_provenance(project):
    case = expand_cases("mini", project)[1]
    row = harness.measure(case, harness.compress_case(case, project), load_tier("mini", project))
    low, high = row["top1_ci95"]
    assert low < row["top1"] < high and row["test_size"] == 359
    assert row["speedup_ci95"][0] <= row["speedup_ci95"][1] and row["latency_ms_iqr"] >= 0
    assert len(row["latency_samples_ms"]["b1"]["case"]) == row["latency_rounds"] == 3
    for key in ("model_md5", "cache_key", "config_hash", "data_md5", "teacher_md5", "commit", "dirty"):
        assert key in row, key
    assert row["provenance"] == "measured" and row["threads_trained"] == torch.get_num_threads()


def test_timeit_prints_standalone_and_paired_speed_ups(project, monkeypatch, capsys):
    from slimbench import cli
    monkeypatch.setenv("SLIMBENCH_ROOT", str(project.root))
    assert cli.main(["timeit", "--tier", "mini", "--case", "prune_*90", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.count("speed-up standalone") == 2 and "paired turns" in out  # batch 1 and the tier's batch
    assert cli.main(["timeit", "--tier", "mini", "--case", "prune_*"]) == 2  # two cases match: refused


def test_rows_kept_from_before_provenance_are_marked_legacy(project, tmp_path):
    out = tmp_path / "results"
    old = {**_row("a"), "test_size": 1000, "environment": {"commit": "0123456789abcdef"}}
    leaderboard.update(out, "mini", [old, {**_row("b"), "provenance": "measured"}], ["a", "b"], project.root)
    board = leaderboard.update(out, "mini", [{**_row("b"), "provenance": "measured"}], ["a", "b"], project.root)
    legacy = next(r for r in board["rows"] if r["case_id"] == "a")
    assert legacy["provenance"] == "legacy" and legacy["commit"] == "0123456789abcdef"
    assert legacy["top1_ci95"] == [87.98, 91.71]  # Wilson, 900 of 1,000: centre 0.89847, half-width 0.018622
    assert board["legacy"] == {"rows": 1, "commits": ["0123456789abcdef"]} and board["schema_version"] == 2
    assert "1 of 2 rows are legacy" in (out / "LEADERBOARD.md").read_text()


def test_rows_store_the_effective_settings_and_the_methods_row_metrics(project):
    cases = expand_cases("mini", project)
    pruned, quantized = cases[1], cases[3]  # prune_global_magnitude at 50%; quant_ptq_int8 with calibration_size 64
    tier = load_tier("mini", project)
    outcome = harness.compress_case(pruned, project)
    prune_row = harness.measure(pruned, outcome, tier)
    assert prune_row["settings"] == {} and prune_row["effective_settings"] == {"finetune_epochs": 0}
    assert prune_row["per_layer"] == metrics.per_layer_params(outcome.reference, outcome.model)  # still measured
    assert prune_row["per_layer"] and all(layer["after"] <= layer["before"] for layer in prune_row["per_layer"])
    quant_row = harness.measure(quantized, harness.compress_case(quantized, project), tier)
    assert quant_row["settings"] == {"calibration_size": 64}  # the case's own, unchanged (config_hash reads it)
    assert quant_row["effective_settings"] == {"observer": "histogram", "calibration_size": 64}
    assert "per_layer" not in quant_row
    from slimbench.plots import row_label
    assert row_label(quant_row) == "quant_ptq_int8 (histogram)"
