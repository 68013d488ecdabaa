"""Regression reports: two leaderboards (a baseline and a run) compared case by case.

A change counts as a regression only when it is larger than a threshold *and* larger than the
noise, tested the way trusted tools do:

- top-1: McNemar's exact test on the test images the two models classify differently (per-image
  predictions kept beside each board), p < ``alpha``; without predictions, the two Wilson
  intervals must not overlap (the report says which test it used).
- latency: relative to each run's reference, timed in alternated turns in the same run, so a
  slower stretch of the machine cancels: per turn, case time / reference time. Old and new
  turns are compared with Mann-Whitney U (as benchstat does); a slowdown needs the whole
  bootstrap interval of the ratio of medians above ``latency_ratio`` and p < ``alpha``, at
  batch 1 *and* at the tier's batch size. Latency is judged only between runs on the same kind of
  machine (CPU model, flags, cores, caches, threads, torch).
- a budget that was met and no longer is; a case missing from the new board (unless allowed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from . import stats
from .errors import SlimbenchError
from .leaderboard import load_predictions
from .rows import missing_keys, rows_and_environment, top1_interval

DEFAULT_THRESHOLDS = {"top1_drop": 0.5, "latency_ratio": 1.10, "budget_flip": True, "alpha": 0.01}
# What must match for latency ratios to count (rows from before cpu_flags_md5 was recorded never match).
TIMING_ENVIRONMENT = ("cpu", "cpu_flags_md5", "cpu_cores", "cpu_caches", "threads", "torch")
NEEDED = ("case_id", "top1", "budget_met")  # of rows.ROW_KEYS: what a comparison reads
PredictionsOf = Callable[[dict[str, Any]], "np.ndarray | None"]


class UnreadableInput(SlimbenchError):
    """A leaderboard that cannot be read (exit status 2)."""


@dataclass
class Board:
    rows: dict[str, dict[str, Any]]
    environment: dict[str, Any]
    predictions_dir: Path
    uncached: list[str] = field(default_factory=list)  # no model in the cache at its last run

    def predictions(self, row: dict[str, Any]) -> np.ndarray | None:
        return load_predictions(self.predictions_dir, row)


def predictions_dir(board_path: Path) -> Path:
    """Where a board's prediction sidecars live: results/<tier>/predictions/ beside a
    leaderboard.json, baselines/<tier>-predictions/ beside baselines/<tier>.json."""
    board_path = Path(board_path)
    if board_path.name == "leaderboard.json":
        return board_path.parent / "predictions"
    return board_path.parent / f"{board_path.stem}-predictions"


def load_board(path: str | Path) -> Board:
    """A leaderboard JSON (or a pytest-benchmark JSON) with its environment and predictions."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
        rows, env = rows_and_environment(blob)
        uncached = [str(case) for case in blob.get("uncached_cases", [])]
        missing = sorted({k for r in rows for k in missing_keys(r, NEEDED)})
        if missing:
            raise ValueError(f"rows lack {missing}")
        by_id = {r["case_id"]: r for r in rows}
    except FileNotFoundError:
        raise UnreadableInput(f"no leaderboard at {path}; fix: give a results/<tier>/leaderboard.json or "
                              f"baselines/<tier>.json path") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableInput(f"unreadable leaderboard {path} ({exc.__class__.__name__}: {exc}); fix: regenerate "
                              "it with `slimbench run` or restore it from git") from None
    return Board(by_id, env, predictions_dir(path), uncached)


@dataclass
class Report:
    deltas: list[dict[str, Any]] = field(default_factory=list)
    new_cases: list[str] = field(default_factory=list)
    missing_cases: list[str] = field(default_factory=list)
    uncached_cases: list[str] = field(default_factory=list)  # no model in the new run's cache: not measured
    regressions: list[str] = field(default_factory=list)
    within_noise: list[str] = field(default_factory=list)  # beyond a threshold, not beyond the noise
    environment_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    timing_comparable: bool = True


def _ratio(new: Any, old: Any) -> float | None:
    return round(new / old, 3) if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old else None


def _no_predictions(row: dict[str, Any]) -> None:
    """Default predictions lookup: none (the Wilson intervals decide)."""
    return None


def compare(old: dict[str, dict], new: dict[str, dict], old_env: dict, new_env: dict,
            thresholds: dict[str, Any] | None = None, old_predictions: PredictionsOf = _no_predictions,
            new_predictions: PredictionsOf = _no_predictions, uncached: list[str] = ()) -> Report:
    """``uncached``: the cases the new board's run found no model for (their rows, if any, are
    older): listed like missing cases, and not judged."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    report = Report(new_cases=sorted(set(new) - set(old)), missing_cases=sorted(set(old) - set(new) - set(uncached)),
                    uncached_cases=sorted(uncached))
    new = {case_id: row for case_id, row in new.items() if case_id not in report.uncached_cases}
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
                 else str(b["budget_met"]), "model_same": _same_model(a, b)}
        report.deltas.append(delta)
        _judge_top1(report, case_id, a, b, old_predictions(a), new_predictions(b), limits)
        if limits["budget_flip"] and a["budget_met"] and not b["budget_met"]:
            report.regressions.append(f"{case_id}: budget met -> not met")
        if report.timing_comparable:
            _judge_latency(report, case_id, a, b, delta, limits)
    return report


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> str:
    if not (a.get("model_md5") and b.get("model_md5")):
        return "-"
    return "yes" if a["model_md5"] == b["model_md5"] else "no"


def _judge_top1(report: Report, case_id: str, a: dict[str, Any], b: dict[str, Any], old_pred: np.ndarray | None,
                new_pred: np.ndarray | None, limits: dict[str, Any]) -> None:
    drop = a["top1"] - b["top1"]
    if drop <= limits["top1_drop"]:
        return
    significant, evidence = top1_evidence(a, b, old_pred, new_pred, limits["alpha"])
    text = f"{case_id}: top-1 {a['top1']:.2f} -> {b['top1']:.2f} (drop {drop:.2f} > {limits['top1_drop']}; {evidence})"
    (report.regressions if significant else report.within_noise).append(text)


def top1_evidence(a: dict[str, Any], b: dict[str, Any], old_pred: np.ndarray | None, new_pred: np.ndarray | None,
                  alpha: float) -> tuple[bool, str]:
    """(is the drop beyond the noise, how that was decided)."""
    if old_pred is not None and new_pred is not None and np.array_equal(old_pred[1], new_pred[1]):
        b_count, c_count = stats.discordant_counts(old_pred[1], old_pred[0], new_pred[0])
        p = stats.mcnemar_exact(b_count, c_count)
        return p < alpha, (f"McNemar exact p={p:.2g} {'<' if p < alpha else '>='} {alpha}: {b_count} images lost, "
                           f"{c_count} gained of {old_pred.shape[1]}")
    old_ci, new_ci = top1_interval(a), top1_interval(b)
    if old_ci is None or new_ci is None:
        return True, "no predictions or test size: the threshold alone decides"
    apart = new_ci[1] < old_ci[0]
    return apart, (f"no per-image predictions: Wilson 95% intervals {old_ci} and {new_ci} "
                   f"{'do not overlap' if apart else 'overlap'}")


def _judge_latency(report: Report, case_id: str, a: dict[str, Any], b: dict[str, Any], delta: dict[str, Any],
                   limits: dict[str, Any]) -> None:
    """A slowdown at batch 1 and at the tier's batch size, beyond the threshold and the noise."""
    samples = _turn_changes(a, b)
    if samples:
        delta["latency_p"] = [round(s["p"], 4) for s in samples]
        # The whole interval past the threshold: turns within one run understate the noise between
        # runs (unchanged int8 models moved x1.13 [1.03, 1.27] between two runs, p = 0.00025).
        slow = [s["ci95"][0] > limits["latency_ratio"] and s["p"] < limits["alpha"] for s in samples]
        over = [s["ratio"] > limits["latency_ratio"] for s in samples]
        text = (f"{case_id}: latency x{samples[0]['ratio']:.2f} {_ci(samples[0])} / x{samples[1]['ratio']:.2f} "
                f"{_ci(samples[1])} (batch 1 / batch) relative to the reference (> {limits['latency_ratio']}; "
                f"Mann-Whitney p={samples[0]['p']:.2g} / {samples[1]['p']:.2g})")
        if all(slow):
            report.regressions.append(text)
        elif all(over):
            report.within_noise.append(text)
        return
    ratios = [r for r in (delta["relative_latency_ratio"] or delta["latency_ms_ratio"],
                          delta["relative_latency_batch_ratio"]) if r is not None]
    if ratios and min(ratios) > limits["latency_ratio"]:
        report.regressions.append(f"{case_id}: latency x{' / x'.join(map(str, ratios))} (batch 1 / batch) "
                                  f"relative to the reference (> {limits['latency_ratio']}; medians only: "
                                  "no raw turn times in one of the boards)")


def _turn_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]] | None:
    """stats.relative_change at batch 1 and at the batch size, or None when a row lacks raw turns."""
    old, new = a.get("latency_samples_ms") or {}, b.get("latency_samples_ms") or {}
    if not all(k in old and k in new for k in ("b1", "batch")):
        return None
    return [stats.relative_change(old[k]["case"], old[k]["reference"], new[k]["case"], new[k]["reference"])
            for k in ("b1", "batch")]


def _ci(change: dict[str, Any]) -> str:
    return f"[{change['ci95'][0]:.2f}, {change['ci95'][1]:.2f}]"


def render(report: Report, old_name: str, new_name: str, allow_missing: bool = False) -> str:
    verdict = (f"**{len(report.regressions)} regression(s)**" if report.regressions else "**no regression**")
    if report.missing_cases and not allow_missing:
        verdict += f", **{len(report.missing_cases)} case(s) missing**"
    if report.uncached_cases and not allow_missing:
        verdict += f", **{len(report.uncached_cases)} model(s) not in the cache**"
    lines = ["# slimbench regression report", "", f"`{old_name}` -> `{new_name}`: {verdict}.", ""]
    if report.regressions:
        lines += ["## Regressions", "", *[f"- {r}" for r in report.regressions], ""]
    if report.missing_cases:
        lines += ["## Missing cases", "", f"In the baseline, not in the new board ({len(report.missing_cases)}"
                  f"{'; allowed by --allow-missing' if allow_missing else '; a finding: exit 1 unless --allow-missing'}"
                  f"): {', '.join(report.missing_cases)}.", ""]
    if report.uncached_cases:
        lines += ["## Models not in the cache", "", f"The new run found no model for these cases and neither "
                  f"retrained nor measured them ({len(report.uncached_cases)}; make them with `slimbench compress` "
                  "and `dvc push`, or pull them with `dvc pull`"
                  f"{'; allowed by --allow-missing' if allow_missing else '; a finding: exit 1 unless --allow-missing'}"
                  f"): {', '.join(report.uncached_cases)}.", ""]
    if report.within_noise:
        lines += ["## Beyond the threshold, within the noise (not regressions)", "",
                  *[f"- {r}" for r in report.within_noise], ""]
    lines += ["## Environment", ""]
    if report.environment_diff:
        lines += [tabulate([(k, str(a), str(b)) for k, (a, b) in report.environment_diff.items()],
                           headers=["key", "old", "new"], tablefmt="github"), ""]
    else:
        lines += ["Same environment.", ""]
    if not report.timing_comparable:
        lines += ["Latency ratios are shown but not judged: the runs were timed on different machines "
                  f"({', '.join(k for k in TIMING_ENVIRONMENT if k in report.environment_diff)} differ).", ""]
    if report.new_cases:
        lines += ["## New cases", "", f"{', '.join(report.new_cases)}.", ""]
    headers = ["case", "top-1 old (%)", "top-1 new (%)", "Δ top-1 (pts)", "same weights", "params (x)", "size (x)",
               "MACs (x)", "latency b1 (x)", "b1 vs reference (x)", "latency batch (x)", "batch vs reference (x)",
               "budget met"]
    table = [[d["case_id"], d["top1_old"], d["top1_new"], d["top1_delta"], d["model_same"], d["params_ratio"],
              d["size_bytes_ratio"], d["macs_ratio"], d["latency_ms_ratio"], d["relative_latency_ratio"],
              d["latency_ms_batch_ratio"], d["relative_latency_batch_ratio"], d["budget_met"]]
             for d in report.deltas]
    lines += ["## Per case", "", tabulate(table, headers=headers, tablefmt="github", floatfmt=".2f",
                                          missingval="-"), ""]
    return "\n".join(lines)


def exit_status(report: Report, allow_missing: bool) -> int:
    """1 on a regression or, unless allowed, a case missing from the new board or its cache; else 0."""
    missing = report.missing_cases or report.uncached_cases
    return 1 if report.regressions or (missing and not allow_missing) else 0
