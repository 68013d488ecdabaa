import pytest

from slimbench.cli import main


def test_list_commands(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "kd_logits" in out and "prune_global_magnitude" in out and "quant_ptq_int8" in out and "arch_dwsep" in out
    assert main(["list", "cases", "--tier", "smoke"]) == 0
    assert "kd_logits-fashion_mnist-params100k" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["run", "--tier", "nightly"], "unknown tier 'nightly'; valid tiers: latency1, paper, smoke, standard"),
    (["run", "--tier", "smoke", "--case", "zzz*"], "no case of tier smoke matches 'zzz*'"),
    (["prepare", "mnist"], "unknown dataset 'mnist'; valid datasets:"),
    (["teacher", "nobody"], "unknown teacher 'nobody'; valid teachers:"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_merge_report_and_readme_publish_and_excerpt_a_board(tmp_path, monkeypatch, capsys):
    """`merge` joins shard JSONs into the board, `report` replaces the rows it carries and keeps the
    others, `readme` rewrites the README block between the tier's markers from the board."""
    import json

    import yaml

    from slimbench.render import excerpt_markers
    from slimbench.rows import ROW_KEYS

    tier = {"threads": 1, "batch_size": 8, "latency_rounds": 3, "latency_warmup": 1,
            "datasets": {"digits": {"teacher": "t"}},
            "cases": [{"method": "reference"}, {"method": "quant_weight_fp16", "budget": {"bits": 16}}]}
    params = {"data": {"mirrors": [], "val_fraction": 0.1, "split_seed": 0},
              "teachers": {"t": {"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}}},
              "tiers": {"mini": tier}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(tmp_path))

    def shard(name, case_id, top1):
        row = {**{k: 0 for k in ROW_KEYS}, "case_id": case_id, "method": case_id.split("-")[0], "family": "quant",
               "dataset": "digits", "model": "fashion_cnn", "top1": top1, "budget_kind": "none", "budget_value": 0,
               "budget_met": True, "params": 100, "nonzero_params": 100, "size_bytes": 400, "macs": 50,
               "latency_ms": 1.0}
        (tmp_path / name).write_text(json.dumps({"benchmarks": [{"extra_info": row}]}))
        return str(tmp_path / name)

    ids = ["reference-digits-nobudget", "quant_weight_fp16-digits-bits16"]
    assert main(["merge", "--tier", "mini", shard("s1.json", ids[0], 91.0), shard("s2.json", ids[1], 90.5)]) == 0
    assert main(["report", "--tier", "mini", "--from", shard("s3.json", ids[1], 89.25)]) == 0
    board = json.loads((tmp_path / "results" / "mini" / "leaderboard.json").read_text())
    assert [(r["case_id"], r["top1"]) for r in board["rows"]] == [(ids[0], 91.0), (ids[1], 89.25)]
    start, end = excerpt_markers("mini")
    (tmp_path / "README.md").write_text(f"# x\n\n{start}\nold\n{end}\n\nhand-written\n")
    assert main(["readme", "--tier", "mini", "--datasets", "digits"]) == 0
    text = (tmp_path / "README.md").read_text()
    block = text.split(start)[1].split(end)[0]
    assert "old" not in block and ids[0] in block and "89.25" in block and text.endswith(f"{end}\n\nhand-written\n")
