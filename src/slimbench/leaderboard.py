"""The board of a tier: results/<tier>/leaderboard.json (source of truth) and the board set
written with it, replaced as a whole. Rows in (a run's or shards' benchmark JSONs), merged with
the tier's other current rows, legacy rows marked, study groups summarized, predictions moved to
sidecars. The CSV, Markdown, DVC metrics and README excerpts are `render`'s, the plots `plots`'.

The JSON schema is a contract other tools read (the row's keys and the schema version are
`rows`'): keys may be added, never renamed or dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .environment import board_roofline, fingerprint
from .errors import ConfigError
from .fileio import (atomic_write, clean_stale_temporaries, disk_full_is_one_line, folder_bytes, locked,
                     restore_interrupted_swap, swap_in, temporary_prefix, write_json, write_text)
from .plots import calibration_curves, pareto_plots, rate_curves, runtime_plots
from .render import dvc_metrics, render_csv, render_markdown
from .rows import SCHEMA_VERSION, decode_predictions, legacy_summary, rows_from_benchmark_json, top1_interval

def merge_sources(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of several shard results (pytest-benchmark JSONs from `slimbench run --shard`, or
    leaderboard JSONs); a case in more than one of them is refused, whether or not the rows agree."""
    rows: list[dict[str, Any]] = []
    where: dict[str, Path] = {}
    for path in paths:
        board = load(Path(path)) if Path(path).is_file() else None
        if board is None:
            raise ConfigError(f"no shard result at {path}; fix: pass the files `slimbench run --shard` wrote")
        shard_rows = board["rows"] if "rows" in board else rows_from_benchmark_json(Path(path))
        for row in shard_rows:
            if row["case_id"] in where:
                raise ConfigError(f"case {row['case_id']} is in both {where[row['case_id']]} and {path}; fix: "
                                  "merge each shard once (shards from one `--shard i/n` split never overlap)")
            where[row["case_id"]] = Path(path)
            rows.append(row)
    return rows


def load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"corrupt leaderboard {path} ({exc}); fix: restore it with git checkout") from None


# What `update` writes: the board set, replaced as a whole. Anything else in a tier's folder
# (benchmark.json from the DVC stage) is carried over unchanged.
BOARD_FILES = ("leaderboard.json", "metrics.json", "leaderboard.csv", "LEADERBOARD.md", "plots", "predictions")


def update(results_dir: Path, tier: str, new_rows: list[dict[str, Any]], valid_ids: list[str],
           root: Path, uncached: list[str] = ()) -> dict[str, Any]:
    """Replace the rows of the cases just run, keep the other current cases, drop retired ones.

    Each new row's predictions move to ``predictions/<case_id>.npy``; a kept row made before
    rows carried their provenance is marked ``"provenance": "legacy"``. ``uncached``: the cases a
    ``--cached-only`` run found no model for; the board lists them (``uncached_cases``) until a
    run measures them (a row they have is an earlier run's). One process at a time
    per tier (a lock around read-merge-write); the board set (JSON, metrics, CSV, Markdown,
    plots, predictions) is written into a staging folder and swapped in at once, so a reader or
    a kill never sees a mix of two boards.
    """
    results_dir.parent.mkdir(parents=True, exist_ok=True)
    with locked(results_dir.parent / f".{results_dir.name}.lock", f"the {tier} leaderboard"):
        restore_interrupted_swap(results_dir)
        clean_stale_temporaries(results_dir.parent)
        clean_stale_temporaries(results_dir)
        old = load(results_dir / "leaderboard.json") or {"rows": []}
        fresh = {r["case_id"] for r in new_rows}
        kept = [mark_legacy(r) for r in old["rows"] if r["case_id"] not in fresh and r["case_id"] in valid_ids]
        order = {cid: i for i, cid in enumerate(valid_ids)}
        rows = sorted(kept + [r for r in new_rows if r["case_id"] in order], key=lambda r: order[r["case_id"]])
        still = (set(old.get("uncached_cases", [])) - fresh) | set(uncached)
        uncached = sorted(still & set(order), key=order.get)
        # the clean-up runs before a full disk is reported, so the free space said is the real one
        with disk_full_is_one_line(results_dir, needed=folder_bytes(results_dir)):
            staged = Path(tempfile.mkdtemp(prefix=temporary_prefix(results_dir), suffix=".tmp",
                                           dir=results_dir.parent))
            try:
                carry_over(results_dir, staged)
                board = _write_board(staged, tier, rows, root, uncached)
                os.chmod(staged, 0o755)  # mkdtemp makes 0700 folders
                swap_in(staged, results_dir)
            finally:
                shutil.rmtree(staged, ignore_errors=True)  # the previous board after a swap, else the partial one
    return board


def carry_over(results_dir: Path, staged: Path) -> None:
    """Link the previous folder's files into ``staged``: predictions (kept rows still need them)
    and whatever is not part of the board set."""
    if not results_dir.is_dir():
        return
    for path in results_dir.rglob("*"):
        relative = path.relative_to(results_dir)
        if path.is_dir() or (relative.parts[0] in BOARD_FILES and relative.parts[0] != "predictions"):
            continue
        target = staged / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _write_board(folder: Path, tier: str, rows: list[dict[str, Any]], root: Path,
                 uncached: list[str]) -> dict[str, Any]:
    """Every file of the board set, written into ``folder``."""
    store_predictions(folder / "predictions", rows)
    env = fingerprint(root)
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    if threads:  # the rows were timed with the tier's threads, not this process's
        env["threads"] = threads[0] if len(threads) == 1 else threads
    env.update(board_roofline(rows))  # the GEMM peaks the rows' peak_fraction is measured against
    board = {"tier": tier, "schema_version": SCHEMA_VERSION, "commit": env["commit"],
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "environment": env, "rows": rows, "summary": summarize(rows), "legacy": legacy_summary(rows),
             "uncached_cases": uncached}
    out = folder / "plots"
    plots = (pareto_plots(rows, out) + rate_curves(rows, out) + calibration_curves(rows, out)
             + runtime_plots(rows, out))
    board["plots"] = [str(path.relative_to(folder)) for path in plots]
    write_json(folder / "leaderboard.json", board)
    write_json(folder / "metrics.json", dvc_metrics(rows))
    write_text(folder / "leaderboard.csv", render_csv(rows))
    write_text(folder / "LEADERBOARD.md", render_markdown(board))
    return board


def mark_legacy(row: dict[str, Any]) -> dict[str, Any]:
    """A row from before provenance was recorded: say so, and give its top-1 the Wilson interval
    of its test-set size where that is known (cost figures from then carry no interval)."""
    if row.get("provenance"):
        return row
    row = {**row, "provenance": "legacy", "commit": row.get("commit", row.get("environment", {}).get("commit"))}
    if (interval := top1_interval(row)) is not None:
        row["top1_ci95"] = interval
    return row


def store_predictions(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Move each row's transported predictions to ``folder/<case_id>.npy`` (uint8, 2 x N: predicted
    class, label) and drop sidecars of cases no longer on the board."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if "predictions_b64" in row:
            both = decode_predictions(row.pop("predictions_b64"))
            atomic_write(folder / f"{row['case_id']}.npy", partial(_save_npy, array=both))
    wanted = {f"{r['case_id']}.npy" for r in rows}
    for stale in folder.glob("*.npy"):
        if stale.name not in wanted:
            stale.unlink()


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a bare path
        np.save(fh, array, allow_pickle=False)


def load_predictions(folder: Path, row: dict[str, Any]) -> np.ndarray | None:
    """The (2, N) predictions/labels array of a row, or None when absent or not matching its md5."""
    if "predictions_b64" in row:
        return decode_predictions(row["predictions_b64"])
    path = folder / f"{row['case_id']}.npy"
    if not row.get("predictions_md5") or not path.is_file():
        return None
    try:
        both = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = both.ndim == 2 and hashlib.md5(both[0].astype(np.uint8).tobytes()).hexdigest() == row["predictions_md5"]
    return both if ok else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study group: top-1 mean and sample standard deviation over its seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("study"):
            groups.setdefault(row["group_id"], []).append(row)
    summary = []
    for group_id, members in groups.items():
        first, top1 = members[0], [r["top1"] for r in members]
        summary.append({
            "group_id": group_id, "study": first["study"],
            **{k: first.get(k) for k in ("method", "family", "dataset", "model", "teacher", "budget_kind",
                                         "budget_value", "reference_top1", "settings", "recipe", "trained_on")},
            "budget_met": all(r["budget_met"] for r in members),
            "top1": round(statistics.mean(top1), 2),
            "top1_std": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
            "seeds": sorted(r["seed"] for r in members), "top1_per_seed": top1,
            "val_top1": round(statistics.mean(r["val_top1"] for r in members), 2),
            **{k: max(r[k] for r in members) for k in ("params", "nonzero_params", "size_bytes", "macs")},
            "sparsity": round(statistics.mean(r["sparsity"] for r in members), 4),
            **{k: round(statistics.median(r[k] for r in members), 4)
               for k in ("latency_ms", "latency_ms_batch", "speedup", "speedup_batch") if k in first},
            "train_seconds": round(statistics.mean(r["train_seconds"] for r in members), 1),
        })
    return summary
