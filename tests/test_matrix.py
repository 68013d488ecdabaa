"""The benchmark matrix's command line: what `pytest benchmarks/` selects when no tier is named."""

import subprocess
import sys

from conftest import ROOT


def collect(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q",
                             "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_no_tier_chosen_runs_the_smoke_tier_and_says_so():
    ids = [line for line in collect().splitlines() if "::" in line]
    assert ids and all(line.startswith("benchmarks/test_smoke.py::") for line in ids)
    header = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True).stdout.splitlines()[:5]
    assert any(line.startswith("slimbench: no tier chosen, running the smoke tier") for line in header)


def test_a_named_tier_is_selected_by_marker_or_option():
    for args in (("-m", "latency1"), ("--tier", "latency1")):
        ids = [line for line in collect(*args).splitlines() if "::" in line]
        assert ids and all(line.startswith("benchmarks/test_latency1.py::") for line in ids)
