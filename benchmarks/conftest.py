"""The benchmark matrix: one parametrized test per case of a tier, timed by pytest-benchmark.

Select a tier with `-m smoke|standard|...` or `--tier NAME` (default: smoke, the quick matrix)
and cases with `--case GLOB`. The tiers, and their markers, are those of params.yaml.
"""

from __future__ import annotations

import pytest
import torch

from matrix import TierProblems, marker_line, params_tiers
from slimbench import harness
from slimbench.cases import Case, load_tier, select, shard


DEFAULT_TIER = "smoke"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", default=None, help=f"run this tier's cases (same as -m NAME; default {DEFAULT_TIER})")
    parser.addoption("--case", default=None, help="shell-style pattern over case ids, e.g. 'kd_*-digits-*'")
    parser.addoption("--shard", default=None, help="i/n: run only the i-th of n stable shards of the cases")
    parser.addoption("--cached-only", action="store_true",
                     help="skip cases whose compressed model is not in the case cache (measure what "
                          "`slimbench compress` made, e.g. on a GPU machine)")
    parser.addoption("--strict-budgets", action="store_true",
                     help="stop before any case runs when a selected case's budget is known to be out of reach")


def pytest_configure(config: pytest.Config) -> None:
    """One marker per tier of params.yaml (an unreadable params.yaml stops the session, exit 2).
    No tier chosen: run the smoke tier, not every tier's hours of training."""
    tiers, problems = params_tiers()
    if problems:
        pytest.exit("slimbench: params.yaml has problems; fix them (`slimbench check`):\n" + "\n".join(problems),
                    returncode=2)
    for name in tiers:
        config.addinivalue_line("markers", marker_line(name))
    tier = config.getoption("--tier")
    if tier:
        config.option.markexpr = tier
    elif not config.option.markexpr:
        config.option.markexpr = DEFAULT_TIER
        config._slimbench_default_tier = True


def pytest_itemcollected(item: pytest.Item) -> None:
    """Each case carries its tier's marker (`-m <tier>` selects it; deselection comes after)."""
    case = item.callspec.params.get("case") if hasattr(item, "callspec") else None
    if isinstance(case, (Case, TierProblems)):
        item.add_marker(case.tier)


# Lines a case prints that the user must see although pytest captures a passing test's output:
# a cache entry that failed its checks and was rebuilt, training resumed after a kill, and a
# runtime the case could not be timed under (its row keeps the reason, ``runtime_errors``).
NOTICES = ("cache entry ", "resuming from ", "runtime failed: ")
_notices: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _notices.extend(f"{report.nodeid.rpartition('[')[2].rstrip(']')}: {line}"
                    for line in report.capstdout.splitlines() if line.startswith(NOTICES))


def pytest_terminal_summary(terminalreporter) -> None:
    if _notices:
        terminalreporter.section("slimbench: rebuilt cache entries and resumed training")
        for line in _notices:
            terminalreporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if getattr(config, "_slimbench_default_tier", False):
        return [f"slimbench: no tier chosen, running the {DEFAULT_TIER} tier; `-m standard` or `--tier standard` "
                "selects another (`slimbench list tiers`)"]
    return [f"slimbench: cases selected by -m {config.option.markexpr!r}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    pattern, part = config.getoption("--case"), config.getoption("--shard")
    if not (pattern or part):
        return

    def wanted(item: pytest.Item) -> bool:
        if not hasattr(item, "callspec") or isinstance(item.callspec.params["case"], TierProblems):
            return True  # a selected tier's problems stop the session whatever --case says
        case = item.callspec.params["case"]
        return bool(select([case], pattern)) and bool(shard([case], part))

    keep = [i for i in items if wanted(i)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


def _selected(session: pytest.Session) -> list:
    return [item.callspec.params["case"] for item in session.items
            if hasattr(item, "callspec") and "case" in item.callspec.params]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before any case runs: a selected tier with params.yaml problems stops the session (exit 2,
    one line per problem; other tiers' problems do not matter), and so, with --strict-budgets,
    does a selected case whose budget is known to be out of reach (otherwise a warning)."""
    selected = _selected(session)
    problems = [p for t in selected if isinstance(t, TierProblems) for p in t.problems]
    if problems:
        pytest.exit("slimbench: the selected tier's params.yaml entry has problems; fix them (`slimbench check`):\n"
                    + "\n".join(problems), returncode=2)
    if session.config.option.collectonly:
        return
    from slimbench.feasibility import infeasible_cases

    lines = list(infeasible_cases([c for c in selected if isinstance(c, Case)]).values())
    if lines and session.config.getoption("--strict-budgets"):
        pytest.exit("slimbench: --strict-budgets: case(s) that cannot meet their budget:\n" + "\n".join(lines),
                    returncode=2)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines if reporter else []:
        reporter.write_line(f"slimbench: warning: {line}; it runs, and cannot meet its budget "
                            "(--strict-budgets refuses it)", yellow=True)


@pytest.fixture
def run_case(benchmark, request):
    """Compress (or load from cache), time inference with the benchmark fixture, record the row."""

    def run(case: Case) -> dict:
        if isinstance(case, TierProblems):
            pytest.fail(f"tier {case.tier} has params.yaml problems:\n" + "\n".join(case.problems), pytrace=False)
        tier = load_tier(case.tier)
        torch.set_num_threads(tier.threads)
        outcome = harness.compress_case(case, cached_only=request.config.getoption("--cached-only"))
        if outcome is None:
            pytest.skip("not in the case cache; make it with `slimbench compress` or run without --cached-only")
        forward = harness.inference_fn(outcome.model)
        example = harness.example_input(outcome.data, 1)
        output = benchmark.pedantic(forward, args=(example,), rounds=tier.latency_rounds,
                                    warmup_rounds=tier.latency_warmup, iterations=1)
        stats = getattr(benchmark, "stats", None)
        row = harness.measure(case, outcome, tier, benchmark_ms=stats.stats.median * 1000 if stats else None)
        benchmark.extra_info.update(row)
        for line in row.get("runtime_errors") or []:
            print(f"runtime failed: {line}")
        assert output.shape == (1, outcome.data.num_classes)
        return row

    return run
