"""The benchmark matrix's command line: one module (benchmarks/test_tiers.py) with one test per
tier of params.yaml, its markers registered from params.yaml, and what `pytest benchmarks/`
selects when no tier is named."""

import os
import subprocess
import sys

import yaml
from conftest import ROOT

from slimbench.cases import expand_cases, tier_names


def collect(*args: str, root=None, ok=True) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"SLIMBENCH_ROOT": str(root)} if root else {})}
    result = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q",
                             "-p", "no:cacheprovider", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def ids(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_no_tier_chosen_runs_the_smoke_tier_and_says_so():
    found = ids(collect())
    assert found and all(line.startswith("benchmarks/test_tiers.py::test_smoke[") for line in found)
    header = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True).stdout.splitlines()[:5]
    assert any(line.startswith("slimbench: no tier chosen, running the smoke tier") for line in header)


def test_a_named_tier_is_selected_by_marker_or_option():
    for args in (("-m", "latency1"), ("--tier", "latency1")):
        found = ids(collect(*args))
        assert found and all(line.startswith("benchmarks/test_tiers.py::test_latency1[") for line in found)


def test_every_tier_of_params_yaml_collects_its_cases_as_ids():
    """Each tier's test carries exactly its cases, ids = case ids in params.yaml order (ids shared
    between tiers stay as they are: `slimbench run` reads the case id from the test id)."""
    tiers = tier_names()
    found = ids(collect("-m", " or ".join(tiers)))
    for tier in tiers:
        prefix = f"benchmarks/test_tiers.py::test_{tier}["
        assert [line[len(prefix):-1] for line in found if line.startswith(prefix)] == \
            [c.case_id for c in expand_cases(tier)], tier
    assert len(found) == sum(len(expand_cases(t)) for t in tiers)


TIER = {"threads": 1, "batch_size": 8, "latency_rounds": 3, "latency_warmup": 1,
        "datasets": {"digits": {"teacher": "t", "recipe": {"epochs": 1, "batch_size": 64}}},
        "cases": [{"method": "reference"}, {"method": "quant_weight_fp16", "budget": {"bits": 16}}]}


def project(tmp_path, tiers) -> object:
    params = {"data": {"mirrors": [], "val_fraction": 0.1, "split_seed": 0},
              "teachers": {"t": {"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}}},
              "tiers": tiers}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def test_a_new_tier_in_params_yaml_is_a_test_and_a_registered_marker(tmp_path):
    """No list to update: a tier added to params.yaml collects under pyproject's --strict-markers
    (its marker registered from params.yaml), and a case id in two tiers keeps its id in each."""
    root = project(tmp_path, {"nightly": TIER, "weekly": TIER})
    found = ids(collect("-m", "nightly or weekly", root=root))
    assert found == [f"benchmarks/test_tiers.py::test_{tier}[{case}]" for tier in ("nightly", "weekly")
                     for case in ("reference-digits-nobudget", "quant_weight_fp16-digits-bits16")]


def test_an_unreadable_params_yaml_stops_the_session_with_its_problem(tmp_path):
    (tmp_path / "params.yaml").write_text("tiers: [\n")
    result = collect(root=tmp_path, ok=False)
    assert result.returncode == 2
    assert "params.yaml has problems" in result.stderr and "malformed" in result.stderr
