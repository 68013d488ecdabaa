"""The tiers are listed once, in params.yaml: the DVC pipelines' per-tier stages and the README's
excerpt stages are checked against it here, and the benchmark markers are registered from it
(benchmarks/conftest.py), not listed by hand in pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import ROOT

from slimbench.config import load_params

PIPELINES = ("dvc.yaml", "heavy/dvc.yaml")  # the quick pipeline (a plain `dvc repro`), the heavy tiers
# Tiers no DVC stage runs, and why.
NOT_IN_DVC = {
    "paper": "GPU-only: 200-epoch schedules, trained with `slimbench compress --tier paper --device cuda` on a GPU "
             "machine and measured with `slimbench run --tier paper --cached-only`",
}


def params_tiers() -> list[str]:
    return list(load_params(ROOT)["tiers"])


def stage_tiers(stage: str) -> dict[str, list[str]]:
    """{pipeline file: the tiers its ``stage`` foreach names (list items or mapping keys)}."""
    found = {}
    for name in PIPELINES:
        stages = yaml.safe_load((ROOT / name).read_text())["stages"]
        if stage in stages:
            found[name] = list(stages[stage]["foreach"])
    return found


def test_every_tier_has_its_bench_and_leaderboard_stage_in_exactly_one_pipeline_or_a_reason():
    assert set(NOT_IN_DVC) <= set(params_tiers()), "a reason for a tier params.yaml no longer has"
    for stage in ("bench", "leaderboard"):
        listed = [t for tiers in stage_tiers(stage).values() for t in tiers]
        assert sorted(listed) == sorted(set(listed)), f"{stage}: a tier in two pipelines or twice: {listed}"
        assert set(listed) == set(params_tiers()) - set(NOT_IN_DVC), (
            f"{stage} stages run {sorted(listed)}; params.yaml has {params_tiers()}, of which "
            f"{sorted(NOT_IN_DVC)} run outside DVC: add the tier to dvc.yaml (quick) or heavy/dvc.yaml, or give a reason")


def test_each_readme_excerpt_is_rewritten_by_a_stage_that_depends_on_its_board():
    """README.md and docs/*.md: every tier excerpt has its readme@ stage, and only those."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "".join(page.read_text() for page in pages)
    markers = set(re.findall(r"<!-- (?:leaderboard-excerpt|studies):([\w-]+):start -->", text))
    assert markers, "neither README.md nor docs/*.md has excerpt markers"
    listed = [t for tiers in stage_tiers("readme").values() for t in tiers]
    assert sorted(listed) == sorted(markers), f"README excerpts of {sorted(markers)}, readme stages for {listed}"
    for name in PIPELINES:
        stage = yaml.safe_load((ROOT / name).read_text())["stages"].get("readme")
        if stage:
            assert stage["do"]["cmd"].startswith("slimbench readme --tier ${item}")
            assert "results/${item}/leaderboard.json" in stage["do"]["deps"]
            assert "outs" not in stage["do"]  # README.md is git-tracked and hand-edited: never a DVC output


def test_the_tier_markers_come_from_params_yaml_not_pyproject():
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    hand_listed = [line.split(":")[0] for line in pytest_ini.get("markers", [])]
    assert not set(hand_listed) & set(params_tiers()), "tier markers are registered by benchmarks/conftest.py"
