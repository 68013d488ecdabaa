"""Regression reports: two leaderboards (a baseline and a run) compared case by case.

Regressions: a top-1 drop beyond a threshold, a budget that was met and no longer is, and a
latency ratio beyond a threshold; latency only counts when both runs were timed on the same
kind of machine (CPU model, threads, torch), since otherwise the ratio measures the machine.

The judged latency ratio is relative to each run's reference model, timed alternately with the
case in the same run: (new latency / new reference latency) / (old latency / old reference
latency) = old speed-up / new speed-up. A busy or slower stretch of a shared machine slows both
and cancels out; the raw ratio of medians is reported beside it. A slowdown counts when it
shows at batch 1 and at the tier's batch size alike: on a shared 2-core machine either one
alone moved by up to 1.27x between two runs of the same cached models, never both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .errors import SlimbenchError

DEFAULT_THRESHOLDS = {"top1_drop": 0.5, "latency_ratio": 1.10, "budget_flip": True}
TIMING_ENVIRONMENT = ("cpu", "threads", "torch")  # what must match for latency ratios to count
NEEDED = ("case_id", "top1", "budget_met")


class UnreadableInput(SlimbenchError):
    """A leaderboard that cannot be read (exit status 2)."""


def load_rows(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Rows by case id and the environment of a leaderboard JSON (or a pytest-benchmark JSON)."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
        if "benchmarks" in blob:
            rows = [b["extra_info"] for b in blob["benchmarks"] if b.get("extra_info", {}).get("case_id")]
            env = blob.get("machine_info", {})
        else:
            rows, env = blob["rows"], blob.get("environment", {})
        missing = sorted({k for r in rows for k in NEEDED if k not in r})
        if missing:
            raise ValueError(f"rows lack {missing}")
        by_id = {r["case_id"]: r for r in rows}
    except FileNotFoundError:
        raise UnreadableInput(f"no leaderboard at {path}; fix: give a results/<tier>/leaderboard.json or "
                              f"baselines/<tier>.json path") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"unreadable leaderboard {path} ({exc.__class__.__name__}: {exc}); fix: regenerate "
                              "it with `slimbench run` or restore it from git") from None
    return by_id, env


@dataclass
class Report:
    deltas: list[dict[str, Any]] = field(default_factory=list)
    new_cases: list[str] = field(default_factory=list)
    missing_cases: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    environment_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    timing_comparable: bool = True


def _ratio(new: Any, old: Any) -> float | None:
    return round(new / old, 3) if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old else None


def compare(old: dict[str, dict], new: dict[str, dict], old_env: dict, new_env: dict,
            thresholds: dict[str, Any] | None = None) -> Report:
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    report = Report(new_cases=sorted(set(new) - set(old)), missing_cases=sorted(set(old) - set(new)))
    keys = sorted((set(old_env) | set(new_env)) - {"created"})
    report.environment_diff = {k: (old_env.get(k), new_env.get(k)) for k in keys if old_env.get(k) != new_env.get(k)}
    report.timing_comparable = not any(k in report.environment_diff for k in TIMING_ENVIRONMENT)
    for case_id in sorted(set(old) & set(new)):
        a, b = old[case_id], new[case_id]
        delta = {"case_id": case_id, "top1_old": a["top1"], "top1_new": b["top1"],
                 "top1_delta": round(b["top1"] - a["top1"], 2),
                 **{f"{k}_ratio": _ratio(b.get(k), a.get(k)) for k in ("params", "size_bytes", "macs", "latency_ms",
                                                                        "latency_ms_batch")},
                 "relative_latency_ratio": _ratio(a.get("speedup"), b.get("speedup")),
                 "relative_latency_batch_ratio": _ratio(a.get("speedup_batch"), b.get("speedup_batch")),
                 "budget_met": f"{a['budget_met']} -> {b['budget_met']}" if a["budget_met"] != b["budget_met"]
                 else str(b["budget_met"])}
        report.deltas.append(delta)
        if a["top1"] - b["top1"] > limits["top1_drop"]:
            report.regressions.append(f"{case_id}: top-1 {a['top1']:.2f} -> {b['top1']:.2f} "
                                      f"(drop {a['top1'] - b['top1']:.2f} > {limits['top1_drop']})")
        if limits["budget_flip"] and a["budget_met"] and not b["budget_met"]:
            report.regressions.append(f"{case_id}: budget met -> not met")
        ratios = [r for r in (delta["relative_latency_ratio"] or delta["latency_ms_ratio"],
                              delta["relative_latency_batch_ratio"]) if r is not None]
        if report.timing_comparable and ratios and min(ratios) > limits["latency_ratio"]:
            report.regressions.append(f"{case_id}: latency x{' / x'.join(map(str, ratios))} (batch 1 / batch) "
                                      f"relative to the reference (> {limits['latency_ratio']})")
    return report


def render(report: Report, old_name: str, new_name: str) -> str:
    verdict = f"**{len(report.regressions)} regression(s)**" if report.regressions else "**no regression**"
    lines = ["# slimbench regression report", "", f"`{old_name}` -> `{new_name}`: {verdict}.", ""]
    if report.regressions:
        lines += ["## Regressions", "", *[f"- {r}" for r in report.regressions], ""]
    lines += ["## Environment", ""]
    if report.environment_diff:
        lines += [tabulate([(k, str(a), str(b)) for k, (a, b) in report.environment_diff.items()],
                           headers=["key", "old", "new"], tablefmt="github"), ""]
    else:
        lines += ["Same environment.", ""]
    if not report.timing_comparable:
        lines += ["Latency ratios are shown but not judged: the runs were timed on different machines "
                  f"({', '.join(k for k in TIMING_ENVIRONMENT if k in report.environment_diff)} differ).", ""]
    if report.new_cases or report.missing_cases:
        lines += ["## Cases", "", f"New: {', '.join(report.new_cases) or 'none'}.",
                  f"Missing: {', '.join(report.missing_cases) or 'none'}.", ""]
    headers = ["case", "top-1 old (%)", "top-1 new (%)", "Δ top-1 (pts)", "params (x)", "size (x)", "MACs (x)",
               "latency b1 (x)", "b1 vs reference (x)", "latency batch (x)", "batch vs reference (x)",
               "budget met"]
    table = [[d["case_id"], d["top1_old"], d["top1_new"], d["top1_delta"], d["params_ratio"], d["size_bytes_ratio"],
              d["macs_ratio"], d["latency_ms_ratio"], d["relative_latency_ratio"], d["latency_ms_batch_ratio"],
              d["relative_latency_batch_ratio"], d["budget_met"]]
             for d in report.deltas]
    lines += ["## Per case", "", tabulate(table, headers=headers, tablefmt="github", floatfmt=".2f",
                                          missingval="-"), ""]
    return "\n".join(lines)
