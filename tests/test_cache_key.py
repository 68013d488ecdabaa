"""The case-cache key: its code part follows what a method really imports, its config part is
the case's params.yaml values, unchanged by Case carrying parsed objects."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from slimbench import harness
from slimbench.budgets import Budget
from slimbench.cases import Case, expand_cases, tier_names
from slimbench.config import Paths
from slimbench.errors import ConfigError
from slimbench.training import Recipe

PACKAGE = Path(harness.__file__).parent


def case_of(method: str, **fields) -> Case:
    return Case(case_id=method, tier="t", method=method, dataset="digits", model="fashion_cnn", **fields)


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of src/slimbench that the key's code part is read from (``harness.PACKAGE``)."""
    copy = tmp_path / "slimbench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(harness, "PACKAGE", copy)
    return copy


def test_the_copy_hashes_like_the_package(package_copy):
    for method in ("arch_dwsep", "kd_logits"):
        assert harness._code_md5(method, package_copy) == harness._code_md5(method, PACKAGE)


def test_editing_metrics_changes_the_key_of_arch_cases_and_not_of_kd_logits(package_copy, monkeypatch):
    arch, kd = case_of("arch_dwsep", budget_config={"params": 20000}), case_of("kd_logits")
    before = {c.method: harness.cache_key(c, "d", "t", threads=1) for c in (arch, kd)}
    metrics = package_copy / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# an edit to the measuring code\n")
    harness._code_md5.cache_clear()  # sources are read once per process
    after = {c.method: harness.cache_key(c, "d", "t", threads=1) for c in (arch, kd)}
    assert after["arch_dwsep"] != before["arch_dwsep"]  # arch sizes its student with metrics
    assert after["kd_logits"] == before["kd_logits"]  # distill.py and what it imports never reach metrics
    monkeypatch.setattr(harness, "PACKAGE", PACKAGE)
    assert harness.cache_key(arch, "d", "t", threads=1) == before["arch_dwsep"]


@pytest.mark.parametrize("edited, changes, keeps", [
    ("methods/sizing.py", ["arch_dwsep", "lowrank_svd", "prune_structured"], ["kd_logits", "quant_ptq_int8"]),
    ("training.py", ["kd_logits", "reference", "quant_weight_int8"], []),  # every method trains or evaluates with it
    ("determinism.py", ["kd_logits", "prune_l1_layer"], []),
    ("models/cnn.py", ["scratch", "quant_qat"], []),
    ("methods/quant_weight.py", ["quant_weight_fp16", "quant_ptq_manual"], ["quant_ptq_int8", "kd_logits"]),
    ("case_cache.py", [], ["kd_logits", "arch_dwsep"]),  # what an entry holds is CACHE_FORMAT
    ("leaderboard.py", [], ["kd_logits", "arch_dwsep"]),
])
def test_a_module_edit_changes_the_keys_of_the_methods_that_import_it(package_copy, edited, changes, keeps):
    before = {m: harness._code_md5(m, package_copy) for m in changes + keeps}
    path = package_copy / edited
    path.write_text(path.read_text() + "\n# edited\n")
    harness._code_md5.cache_clear()
    for method in changes:
        assert harness._code_md5(method, package_copy) != before[method], method
    for method in keeps:
        assert harness._code_md5(method, package_copy) == before[method], method


def test_imports_are_followed_inside_functions_relative_absolute_and_into_packages(tmp_path):
    package = tmp_path / "slimbench"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "d.py", "sub/__init__.py", "sub/e.py", "unused.py"):
        (package / name).write_text("")
    (package / "a.py").write_text("from . import b\n\ndef f():\n    from .sub import e\n    import slimbench.c\n")
    (package / "sub/e.py").write_text("from ..d import thing\nfrom .. import sub\nimport os\nimport torch.nn\n")
    found = harness.import_closure([package / "a.py"], package)
    assert sorted(p.relative_to(package).as_posix() for p in found) == [
        "a.py", "b.py", "c.py", "d.py", "sub/__init__.py", "sub/e.py"]


def test_methods_base_imports_no_measuring_code():
    for method in ("kd_logits", "scratch", "quant_ptq_int8", "quant_weight_int8", "prune_l1_layer"):
        assert "metrics.py" not in harness.code_sources(method), method
    for method in ("arch_dwsep", "lowrank_svd", "prune_structured"):
        assert {"metrics.py", "budgets.py", "methods/base.py"} <= set(harness.code_sources(method)), method


# The config part: HEAD's Case.config_hash (before Case carried parsed objects) was the md5 of
# these fields as written in params.yaml, `from_case` left out while unset.
LEGACY_FIELDS = ("case_id", "method", "dataset", "model", "model_kwargs", "teacher", "budget", "settings",
                 "recipe", "subset", "seed", "from_case")


def legacy_config_hash(case: Case) -> str:
    cfg = {k: case.budget_config if k == "budget" else getattr(case, k) for k in LEGACY_FIELDS}
    if cfg["from_case"] is None:
        del cfg["from_case"]
    return hashlib.md5(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def test_config_hash_of_every_committed_case_is_unchanged(paths):
    cases = [case for tier in tier_names(paths) for case in expand_cases(tier, paths)]
    assert len(cases) > 100 and any(c.from_case for c in cases)
    assert [c.config_hash() for c in cases] == [legacy_config_hash(c) for c in cases]


MINI = {
    "teachers": {"t": {"dataset": "digits", "model": "fashion_cnn"}},
    "tiers": {"mini": {
        "datasets": {"digits": {"teacher": "t", "subset": {"train": 300}, "recipe": {"epochs": 1, "lr": 0.1}}},
        "cases": [{"method": "reference"},
                  {"method": "kd_logits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8},
                   "budget": {"params": 100000}, "settings": {"temperature": 2.0}, "seeds": [0, 1]},
                  {"method": "prune_global_magnitude", "budget": {"sparsity": 0.9}, "recipe": {"epochs": 2}},
                  {"method": "pipeline_kd_quant", "budget": {"bytes": 9000},
                   "from_case": "kd_logits-digits-params100k-seed1"}],
    }},
}
# Recorded with HEAD's cases.py (commit be56903) before this change.
MINI_HASHES = {
    "reference-digits-nobudget": "ad61dca329ffc214c779a2004472587f",
    "kd_logits-digits-params100k-seed0": "1ad7862a02f0fc3d1d4ebe184d4ea044",
    "kd_logits-digits-params100k-seed1": "6f8e65ab0ae9bae70bd91d1af814945c",
    "prune_global_magnitude-digits-sparsity90": "7938d7e7f47b96dd5888918396922944",
    "pipeline_kd_quant-digits-bytes9k": "2df41c3457ad78dfc7dd863cbdf63834",
}


@pytest.fixture
def mini(tmp_path) -> Paths:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(MINI))
    return Paths(tmp_path)


def test_config_hash_is_pinned(mini):
    assert {c.case_id: c.config_hash() for c in expand_cases("mini", mini)} == MINI_HASHES


def test_cases_carry_their_budget_recipe_and_upstream_parsed_once(mini):
    reference, kd0, kd1, prune, pipeline = expand_cases("mini", mini)
    assert kd1.budget == Budget("params", 100000) and kd1.budget_config == {"params": 100000}
    assert reference.budget == Budget("none", 0)
    assert kd1.training_recipe == Recipe(epochs=1, lr=0.1, seed=1) and prune.training_recipe.epochs == 2
    assert kd1.budget is kd1.budget and kd1.training_recipe is kd1.training_recipe  # parsed once per case
    assert pipeline.upstream == kd1 and pipeline.model == "fashion_cnn" and kd0.upstream is None
    assert pipeline.upstream.upstream is None


def test_a_from_case_case_built_by_hand_is_a_clear_error(mini):
    case = case_of("pipeline_kd_quant", from_case="nope")
    with pytest.raises(ConfigError, match="is not resolved; fix: take the case from cases.expand_cases"):
        harness.compress_case(case, mini)
