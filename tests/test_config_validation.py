"""params.yaml checked before anything trains: every problem of a tier as one line (where, what,
fix), tiers with problems not breaking the others, and budgets known to be out of reach."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT
from slimbench import cli
from slimbench.cases import expand_cases, load_tier, tier_problems
from slimbench.config import Paths
from slimbench.errors import ConfigError
from slimbench.feasibility import infeasible_cases
from slimbench.fileio import md5sum
from slimbench.metrics import count_stored_params
from slimbench.models import get_model

STUDENT = {"model": "fashion_cnn", "model_kwargs": {"image_size": 8}}
TIER = {
    "threads": 1, "batch_size": 8, "latency_rounds": 3, "latency_warmup": 1,
    "datasets": {"digits": {"teacher": "t", "subset": {"train": 300, "val": 100, "test": 100},
                            "recipe": {"epochs": 1, "batch_size": 64}}},
    "cases": [{"method": "reference"},
              {"method": "kd_logits", **STUDENT, "budget": {"params": 100000}, "settings": {"temperature": 4.0}},
              {"method": "arch_dwsep", **STUDENT, "budget": {"params": 20000}},
              {"method": "prune_global_magnitude", "budgets": [{"sparsity": 0.5}, {"sparsity": 0.9}]},
              {"method": "prune_iterative", "budget": {"sparsity": 0.95}, "tag": "chain", "settings": {"rounds": 1},
               "from_case": "prune_global_magnitude-digits-sparsity90"}],
}
PARAMS = {
    "data": {"mirrors": [], "val_fraction": 0.1, "split_seed": 0},
    "teachers": {"t": {"dataset": "digits", **STUDENT},
                 "f": {"dataset": "fashion_mnist", "model": "fashion_cnn"}},
    "tiers": {"smoke": copy.deepcopy(TIER), "standard": copy.deepcopy(TIER)},
}


def make_project(root, edit=None) -> Paths:
    """A throwaway project (params.yaml, teacher t with untrained weights) after ``edit(params)``."""
    params = copy.deepcopy(PARAMS)
    if edit:
        edit(params)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "teachers").mkdir(exist_ok=True)
    torch.manual_seed(0)
    teacher = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    torch.save({"state_dict": teacher.state_dict()}, root / "teachers" / "t.pt")
    meta = {"dataset": "digits", "architecture": "fashion_cnn", "model_kwargs": {"image_size": 8},
            "num_classes": 10, "in_channels": 1, "md5": md5sum(root / "teachers" / "t.pt")}
    (root / "teachers" / "t.json").write_text(json.dumps(meta))
    return Paths(root)


def smoke(params) -> dict:
    return params["tiers"]["smoke"]


def case(params, i: int) -> dict:
    return smoke(params)["cases"][i]


def test_the_test_project_and_the_committed_params_have_no_problems(tmp_path):
    paths = make_project(tmp_path)
    assert tier_problems("smoke", paths) == [] and tier_problems("standard", paths) == []
    committed = Paths(ROOT)
    assert {t: tier_problems(t, committed) for t in ("smoke", "standard", "latency1", "paper")} == \
        {t: [] for t in ("smoke", "standard", "latency1", "paper")}


BROKEN = {
    "unknown tier key": (lambda p: smoke(p).update(thread=2),
                         "tiers.smoke: unknown key 'thread'; fix: did you mean 'threads'? valid: batch_size, cases, "
                         "datasets, latency_rounds, latency_warmup, runtimes, threads"),
    "tier int as string": (lambda p: smoke(p).update(latency_rounds="20"),
                           "tiers.smoke.latency_rounds: '20' is not an integer >= 1; fix: e.g. latency_rounds: 30"),
    "unknown dataset key": (lambda p: smoke(p)["datasets"]["digits"].update(
                                subest=smoke(p)["datasets"]["digits"].pop("subset")),
                            "tiers.smoke.datasets.digits: unknown key 'subest'; fix: did you mean 'subset'? valid: "
                            "recipe, subset, teacher"),
    "subset size not a positive int": (lambda p: smoke(p)["datasets"]["digits"]["subset"].update(val=0),
                                       "tiers.smoke.datasets.digits.subset.val: 0 is not a positive integer"),
    "unknown subset part": (lambda p: smoke(p)["datasets"]["digits"]["subset"].update(trian=5),
                            "tiers.smoke.datasets.digits.subset: unknown part 'trian'; fix: did you mean 'train'?"),
    "unknown dataset": (lambda p: smoke(p)["datasets"].update(mnist={"teacher": "t"}),
                        "tiers.smoke.datasets.mnist: unknown dataset 'mnist'; fix:"),
    "unknown recipe key": (lambda p: smoke(p)["datasets"]["digits"]["recipe"].update(epoch=3),
                           "tiers.smoke.datasets.digits.recipe: unknown key 'epoch'; fix: did you mean 'epochs'?"),
    "unknown case recipe key": (lambda p: case(p, 1).update(recipe={"learning_rate": 0.1}),
                                "tiers.smoke.cases[1].recipe: unknown key 'learning_rate'; fix:"),
    "recipe int as float": (lambda p: smoke(p)["datasets"]["digits"]["recipe"].update(epochs=1.5),
                            "tiers.smoke.datasets.digits.recipe.epochs: 1.5 is not a non-negative integer"),
    "unknown augment": (lambda p: smoke(p)["datasets"]["digits"]["recipe"].update(augment="crop_flp"),
                        "tiers.smoke.datasets.digits.recipe.augment: unknown augment 'crop_flp'; fix: did you mean "
                        "'crop_flip'?"),
    "unknown case key": (lambda p: case(p, 1).update(budgt={"params": 5}),
                         "tiers.smoke.cases[1]: unknown key 'budgt'; fix: did you mean 'budget'?"),
    "unknown model": (lambda p: case(p, 1).update(model="fashion_cn"),
                      "tiers.smoke.cases[1].model: unknown model 'fashion_cn'; fix: did you mean 'fashion_cnn'?"),
    "unknown method": (lambda p: case(p, 1).update(method="kd_logit"),
                       "tiers.smoke.cases[1].method: unknown method 'kd_logit'; fix: did you mean 'kd_logits'?"),
    "unknown setting": (lambda p: case(p, 1)["settings"].update(temprature=2.0),
                        "tiers.smoke.cases[1].settings (method kd_logits): unknown setting 'temprature'; fix: did "
                        "you mean 'temperature'? valid: alpha, cache_teacher_logits, temperature"),
    "budget kind the method does not take": (lambda p: case(p, 2).update(budget={"sparsity": 0.5}),
                                             "tiers.smoke.cases[2].budget: method arch_dwsep takes budget kinds "
                                             "params, not 'sparsity'; fix: e.g. budget: {params: ...}"),
    "invalid budget": (lambda p: case(p, 2).update(budget={"params": -5}),
                       "tiers.smoke.cases[2].budget: budget params=-5.0 must be positive"),
    "invalid budget in a list": (lambda p: smoke(p)["cases"].append({"method": "prune_l1_layer", "budgets": [
                                     {"sparsity": 0.5}, {"sparsity": 1.5}]}),
                                 "tiers.smoke.cases[5].budgets[1]: sparsity budget 1.5 must be below 1"),
    "teacher of another dataset": (lambda p: case(p, 1).update(teacher="f"),
                                   "tiers.smoke.cases[1].teacher: teacher f was declared for fashion_mnist "
                                   "(teachers.f.dataset), not digits; fix: name a digits teacher (t)"),
    "dataset teacher of another dataset": (lambda p: smoke(p)["datasets"]["digits"].update(teacher="f"),
                                           "tiers.smoke.datasets.digits.teacher: teacher f was declared for "
                                           "fashion_mnist"),
    "unknown teacher": (lambda p: case(p, 1).update(teacher="tt"),
                        "tiers.smoke.cases[1].teacher: unknown teacher 'tt'; fix: did you mean 't'?"),
    "seeds not ints": (lambda p: case(p, 1).update(seeds=[0, "1"]),
                       "tiers.smoke.cases[1].seeds: must be a non-empty list of distinct non-negative integers"),
    "tag not a string": (lambda p: case(p, 1).update(tag=3), "tiers.smoke.cases[1].tag: 3 is not a string"),
    "settings not a mapping": (lambda p: case(p, 1).update(settings=[4.0]),
                               "tiers.smoke.cases[1].settings: must be a mapping, got [4.0]"),
    "bad from_case": (lambda p: case(p, 4).update(from_case="nope"),
                      "tiers.smoke.cases[4]: case prune_iterative-digits-sparsity95-chain: from_case 'nope' is not a "
                      "case of tier smoke"),
    "duplicate case id": (lambda p: smoke(p)["cases"].append({"method": "reference"}),
                          "tiers.smoke.cases[5]: duplicate case id 'reference-digits-nobudget' (also made by "
                          "cases[0])"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_problem_is_one_line_naming_where_what_and_the_fix(tmp_path, name):
    edit, expected = BROKEN[name]
    problems = tier_problems("smoke", make_project(tmp_path, edit))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected) and "fix:" in problems[0] and "\n" not in problems[0]
    assert tier_problems("standard", Paths(tmp_path)) == []  # the other tier is untouched


def test_every_problem_is_collected_not_only_the_first(tmp_path):
    names = ["unknown tier key", "unknown dataset key", "unknown case key", "unknown model", "unknown setting",
             "budget kind the method does not take", "teacher of another dataset"]

    def edit(params):
        for name in names:
            BROKEN[name][0](params)

    problems = tier_problems("smoke", make_project(tmp_path, edit))
    assert len(problems) == len(names)
    for name in names:
        assert any(p.startswith(BROKEN[name][1]) for p in problems), name


def test_load_tier_no_longer_drops_unknown_keys(tmp_path):
    paths = make_project(tmp_path, BROKEN["unknown dataset key"][0])
    with pytest.raises(ConfigError, match="unknown key 'subest'; fix: did you mean 'subset'.*slimbench check"):
        load_tier("smoke", paths)
    assert load_tier("standard", paths).datasets["digits"]["subset"]["train"] == 300


def test_a_broken_tier_is_reported_before_a_command_trains(tmp_path, monkeypatch, capsys):
    def edit(params):
        for name in ("unknown dataset key", "unknown setting", "unknown model"):
            BROKEN[name][0](params)

    paths = make_project(tmp_path, edit)
    monkeypatch.setenv("SLIMBENCH_ROOT", str(paths.root))
    problems = tier_problems("smoke", paths)
    assert len(problems) == 3

    def trained(*args, **kwargs):
        raise AssertionError("trained despite a broken tier")

    monkeypatch.setattr("slimbench.harness.compress_case", trained)
    monkeypatch.setattr(pytest, "main", trained)
    for argv in (["run", "--tier", "smoke"], ["compress", "--tier", "smoke"], ["list", "cases", "--tier", "smoke"]):
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert err.splitlines() == [f"slimbench: error: {p}" for p in problems] and out == ""


def test_problems_of_another_tier_are_one_warning_line(tmp_path, monkeypatch, capsys):
    def edit(params):
        params["tiers"]["standard"] = copy.deepcopy(TIER)
        params["tiers"]["standard"]["thread"] = 2
        params["tiers"]["standard"]["cases"][1]["model"] = "fashion_cn"

    monkeypatch.setenv("SLIMBENCH_ROOT", str(make_project(tmp_path, edit).root))
    assert cli.main(["list", "cases", "--tier", "smoke"]) == 0
    out, err = capsys.readouterr()
    assert "reference-digits-nobudget" in out
    assert err.splitlines() == [
        "slimbench: warning: tier standard has 2 problem(s); see slimbench check --tier standard"]
    assert cli.main(["check", "--tier", "smoke"]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli.main(["check"]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == ["tiers.standard", "tiers.standard.cases[1].model"]
    assert "2 problem(s)" in err


@pytest.fixture(autouse=True)
def keep_threads():
    """`slimbench compress` sets the tier's thread count; later tests in this process keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def collect(root, *args):
    """pytest on the benchmark matrix with ``root`` as the project root."""
    env = {**os.environ, "SLIMBENCH_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_a_broken_standard_tier_does_not_stop_a_smoke_collection(tmp_path, monkeypatch):
    paths = make_project(tmp_path, lambda p: p["tiers"].update(standard={**copy.deepcopy(TIER), "thread": 2}))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(paths.root))
    import matrix

    (param,) = matrix.tier_params("standard")  # no exception: one param standing for the problems
    assert param.values[0].problems == tier_problems("standard", paths)
    assert len(matrix.tier_params("smoke")) == len(expand_cases("smoke", paths))
    ok = collect(paths.root, "--collect-only", "-m", "smoke")
    ids = [line for line in ok.stdout.splitlines() if "::" in line]
    assert ok.returncode == 0 and len(ids) == len(expand_cases("smoke", paths)), ok.stdout + ok.stderr
    assert all(line.startswith("benchmarks/test_tiers.py::test_smoke[") for line in ids)
    broken = collect(paths.root, "--collect-only", "-m", "standard")
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "tiers.standard: unknown key 'thread'; fix: did you mean 'threads'?" in broken.stdout + broken.stderr


IMPOSSIBLE = [  # (case entry, the reason's expected start after "cannot meet <budget>: ")
    ({"method": "arch_dwsep", **STUDENT, "budget": {"params": 10}}, "params<=10: the smallest width (0.05) has"),
    ({"method": "kd_logits", **STUDENT, "budget": {"params": 1000}},
     "params<=1000: the model it trains keeps its architecture, which has"),
    ({"method": "lowrank_svd", "budget": {"params": 100}}, "params<=100: the lowest ranks (1 per factorized layer)"),
    ({"method": "prune_structured", "budget": {"params": 100}},
     "params<=100: removing 90% of the prunable channels (the most it removes) leaves"),
    ({"method": "quant_weight_int8", "budget": {"bits": 4}}, "bits<=4: quant_weight_int8 stores 8-bit weights"),
    ({"method": "quant_ptq_int8", "budget": {"bytes": 100}}, "bytes<=100: its "),
]


def test_budgets_out_of_reach_are_known_before_training(tmp_path):
    paths = make_project(tmp_path, lambda p: smoke(p)["cases"].extend(entry for entry, _ in IMPOSSIBLE))
    cases = expand_cases("smoke", paths)
    found = infeasible_cases(cases, paths)
    impossible = [c.case_id for c in cases[-len(IMPOSSIBLE):]]
    assert sorted(found) == sorted(impossible)  # the feasible cases of the tier are not flagged
    for case_id, (_, reason) in zip(impossible, IMPOSSIBLE):
        assert found[case_id].startswith(f"case {case_id} cannot meet {reason}"), found[case_id]
    smallest = count_stored_params(get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8, width=0.05,
                                      conv="dwsep"))
    assert found[impossible[0]].endswith(f"has {smallest:,} params")


def test_strict_budgets_refuses_a_params_10_case_and_the_default_compress_only_warns(tmp_path, monkeypatch, capsys):
    """`compress` checks budgets itself; `run` forwards --strict-budgets to the benchmark session,
    which checks at collection (next test)."""
    paths = make_project(tmp_path, lambda p: smoke(p)["cases"].append(IMPOSSIBLE[0][0]))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(paths.root))
    calls = []

    class Ran(Exception):
        pass

    def fake_pytest(argv, **kwargs):
        calls.append(argv)
        raise Ran

    def fake_compress(case, *args, **kwargs):
        calls.append(case.case_id)
        raise ConfigError("not trained in this test")

    monkeypatch.setattr(pytest, "main", fake_pytest)
    monkeypatch.setattr("slimbench.harness.compress_case", fake_compress)
    line = "case arch_dwsep-digits-params10 cannot meet params<=10: the smallest width (0.05) has"
    assert cli.main(["compress", "--tier", "smoke", "--case", "arch_*", "--strict-budgets"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"slimbench: error: {line}") and "fix:" in err[0]
    assert calls == []  # refused before training
    assert cli.main(["compress", "--tier", "smoke", "--case", "arch_*"]) == 1  # fake_compress fails every case
    assert calls == ["arch_dwsep-digits-params20k", "arch_dwsep-digits-params10"]  # both went on to training
    assert capsys.readouterr().err.count(f"slimbench: warning: {line}") == 1
    for flags in ([], ["--strict-budgets"]):
        with pytest.raises(Ran):
            cli.main(["run", "--tier", "smoke", "--case", "arch_*", *flags])
        assert ("--strict-budgets" in calls[-1]) == bool(flags)


def test_the_benchmark_session_refuses_or_warns_about_budgets_out_of_reach(tmp_path):
    paths = make_project(tmp_path, lambda p: smoke(p)["cases"].append(IMPOSSIBLE[0][0]))
    line = "case arch_dwsep-digits-params10 cannot meet params<=10: the smallest width (0.05) has"
    strict = collect(paths.root, "-m", "smoke", "--case", "arch_dwsep-*", "--strict-budgets")
    assert strict.returncode == 2 and line in strict.stdout + strict.stderr, strict.stdout + strict.stderr
    assert "passed" not in strict.stdout and "skipped" not in strict.stdout  # no case ran
    # without the flag the session goes on (--cached-only: the uncached cases skip instead of training)
    lenient = collect(paths.root, "-m", "smoke", "--case", "arch_dwsep-*", "--cached-only")
    assert lenient.returncode == 0 and f"slimbench: warning: {line}" in lenient.stdout, lenient.stdout + lenient.stderr
    assert "2 skipped" in lenient.stdout


def test_check_warns_about_budgets_out_of_reach_and_still_passes(tmp_path, monkeypatch, capsys):
    paths = make_project(tmp_path, lambda p: smoke(p)["cases"].append(IMPOSSIBLE[0][0]))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(paths.root))
    assert cli.main(["check", "--tier", "smoke"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("warning: case arch_dwsep-digits-params10 cannot meet params<=10")
    assert out[-1].endswith("; 1 budget(s) out of reach")
