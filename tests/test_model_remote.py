"""Compressed models travel through a DVC remote: one clone compresses and pushes, another clone
pulls and measures without retraining (src/slimbench/model_store.py). Real git, DVC and
slimbench processes on a throwaway project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import cached_models, mini_params, write_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUDENT = {"model": "fashion_cnn", "model_kwargs": {"image_size": 8}, "budget": {"params": 100000}}
CASES = [{"method": "scratch", **STUDENT, "seeds": [0, 1]},
         {"method": "prune_global_magnitude", "budget": {"sparsity": 0.5}, "settings": {"finetune_epochs": 1}},
         {"method": "quant_weight_fp16", "budget": {"bits": 16}}]
STAGE = {"stages": {"compress": {"foreach": ["mini"], "do": {
    "cmd": "slimbench compress --tier ${item}", "deps": ["teachers"], "params": ["tiers.${item}"],
    "outs": [{".slimbench-cache/${item}": {"persist": True, "remote": "models"}}]}}}}


def _sh(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLIMBENCH_ROOT": str(cwd), "PATH": f"{BIN}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done


def _slimbench(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return _sh(cwd, sys.executable, "-m", "slimbench.cli", *argv)


def _project(root: Path, remote: Path, teacher) -> None:
    """A git + DVC project: the mini tier, its compress stage, the benchmark matrix, a remote."""
    root.mkdir()
    write_project(root, mini_params(CASES), teacher)
    shutil.copytree(ROOT / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
    (root / "benchmarks" / "test_mini.py").write_text(
        "import pytest\nfrom matrix import check_row, tier_params\n\n\n"
        "@pytest.mark.parametrize('case', tier_params('mini'))\ndef test_case(case, run_case):\n"
        "    check_row(run_case(case))\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    (root / ".gitignore").write_text("/results/\n/data/\n/.slimbench-jobs/\n__pycache__/\n")
    _sh(root, "git", "init", "-q")
    _sh(root, "dvc", "init", "-q")
    _sh(root, "dvc", "remote", "add", "models", str(remote))
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "project")


def _entries(root: Path) -> dict[str, dict]:
    """case id -> its cache entry's key, model_md5 and quality numbers."""
    return {case: {"key": key, "model_md5": md5, **json.loads(next((root / ".slimbench-cache" / "mini" / case).glob(
        f"{key}/quality.json")).read_text())} for case, (key, md5) in cached_models(root).items()}


def test_a_clone_measures_the_models_another_clone_pushed_without_retraining(tmp_path, digits_model):
    a, b, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    _project(a, remote, digits_model)
    made = _slimbench(a, "compress", "--tier", "mini", "--executor", "local", "--jobs", "2")
    assert "recorded .slimbench-cache/mini in dvc.lock (stage compress@mini)" in made.stdout
    _sh(a, "dvc", "push")
    _sh(a, "git", "add", "-A")  # dvc.lock (the models' hashes) and DVC's .gitignore in the cache folder
    _sh(a, "git", "commit", "-qm", "models")
    _sh(tmp_path, "git", "clone", "-q", str(a), str(b))

    _slimbench(b, "run", "--tier", "mini", "--cached-only")  # nothing pulled yet: nothing measured, all listed
    board = json.loads((b / "results" / "mini" / "leaderboard.json").read_text())
    assert board["rows"] == [] and len(board["uncached_cases"]) == 4
    assert "Not measured: no model in the case cache" in (b / "results" / "mini" / "LEADERBOARD.md").read_text()

    _sh(b, "dvc", "pull", "compress@mini")
    _slimbench(b, "run", "--tier", "mini", "--cached-only")
    board = json.loads((b / "results" / "mini" / "leaderboard.json").read_text())
    made_in_a = _entries(a)
    assert len(made_in_a) == 4 and board["uncached_cases"] == []
    assert {r["case_id"]: (r["cache_hit"], r["model_md5"], r["top1"]) for r in board["rows"]} == {
        case: (True, entry["model_md5"], round(entry["top1"], 2)) for case, entry in made_in_a.items()}
    assert _entries(b) == made_in_a  # the same keys: B computed them from its own checkout


def test_compress_outside_a_dvc_stage_output_records_nothing(tmp_path, digits_model):
    from slimbench import model_store

    write_project(tmp_path, mini_params(CASES), digits_model)
    (tmp_path / ".slimbench-cache" / "mini").mkdir(parents=True)
    assert model_store.record(tmp_path, "mini") is None  # no .dvc: not a DVC project
