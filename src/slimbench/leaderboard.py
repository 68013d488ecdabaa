"""Leaderboards: results/<tier>/leaderboard.json (source of truth), rendered to CSV and Markdown.

The JSON schema is a contract other tools read: keys may be added, never renamed or dropped.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
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
from tabulate import tabulate

from . import stats
from .environment import fingerprint
from .errors import ConfigError
from .fileio import (atomic_write, clean_stale_temporaries, disk_full_is_one_line, folder_bytes, locked,
                     restore_interrupted_swap, swap_in, temporary_prefix, write_json, write_text)
from .plots import calibration_curves, pareto_plots, rate_curves

ROW_KEYS = ("case_id", "method", "family", "dataset", "model", "teacher", "budget_kind", "budget_value",
            "budget_met", "top1", "val_top1", "reference_top1", "top1_delta", "params", "nonzero_params",
            "sparsity", "size_bytes", "macs", "latency_ms", "latency_ms_batch", "speedup", "seed",
            "train_seconds")
MD_COLUMNS = (("case_id", "case"), ("family", "family"), ("model", "model"), ("budget_met", "budget met"),
              ("top1_text", "top-1 (%) [95% CI]"), ("top1_delta", "Δ top-1 (pts)"), ("params", "params"),
              ("nonzero_params", "non-zero"), ("sparsity", "sparsity"), ("size_bytes", "size (bytes)"),
              ("size_bytes_zipped", "zipped (bytes)"), ("macs", "MACs"), ("latency_text", "latency b1 (ms) ± IQR"),
              ("latency_batch_text", "latency batch (ms) ± IQR"), ("speedup_text", "speed-up b1 (x) [95% CI]"),
              ("speedup_batch_text", "speed-up batch (x) [95% CI]"), ("train_seconds", "train (s)"),
              ("provenance", "provenance"))


def with_uncertainty(row: dict[str, Any]) -> dict[str, Any]:
    """The row plus text cells that put each figure beside its interval or spread."""
    def interval(value: Any, ci: Any) -> Any:
        return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(value) if value is not None else "-"

    def spread(value: Any, iqr: Any) -> Any:
        return f"{_fmt(value)} ± {_fmt(iqr)}" if iqr is not None else _fmt(value) if value is not None else "-"

    return {**row, "top1_text": interval(row.get("top1"), row.get("top1_ci95")),
            "latency_text": spread(row.get("latency_ms"), row.get("latency_ms_iqr")),
            "latency_batch_text": spread(row.get("latency_ms_batch"), row.get("latency_ms_batch_iqr")),
            "speedup_text": interval(row.get("speedup"), row.get("speedup_ci95")),
            "speedup_batch_text": interval(row.get("speedup_batch"), row.get("speedup_batch_ci95"))}


def rows_from_benchmark_json(path: Path) -> list[dict[str, Any]]:
    """Leaderboard rows carried in a pytest-benchmark JSON's extra_info."""
    try:
        blob = json.loads(Path(path).read_text())
        rows = [b["extra_info"] for b in blob["benchmarks"] if b.get("extra_info", {}).get("case_id")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable benchmark JSON {path} ({exc}); fix: rerun `slimbench run`") from None
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ConfigError(f"{path}: case {row['case_id']} lacks {missing}; fix: rerun it")
    return rows


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


SCHEMA_VERSION = 2  # 2: uncertainty, provenance and prediction sidecars
# Row keys too bulky for the CSV (they stay in the JSON).
JSON_ONLY = ("latency_samples_ms", "predictions_b64")


# What `update` writes: the board set, replaced as a whole. Anything else in a tier's folder
# (benchmark.json from the DVC stage) is carried over unchanged.
BOARD_FILES = ("leaderboard.json", "metrics.json", "leaderboard.csv", "LEADERBOARD.md", "plots", "predictions")


def update(results_dir: Path, tier: str, new_rows: list[dict[str, Any]], valid_ids: list[str],
           root: Path) -> dict[str, Any]:
    """Replace the rows of the cases just run, keep the other current cases, drop retired ones.

    Each new row's predictions move to ``predictions/<case_id>.npy``; a kept row made before
    rows carried their provenance is marked ``"provenance": "legacy"``. One process at a time
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
        staged = Path(tempfile.mkdtemp(prefix=temporary_prefix(results_dir), suffix=".tmp", dir=results_dir.parent))
        try:
            with disk_full_is_one_line(results_dir.parent, needed=folder_bytes(results_dir)):
                carry_over(results_dir, staged)
                board = _write_board(staged, tier, rows, root)
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


def _write_board(folder: Path, tier: str, rows: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Every file of the board set, written into ``folder``."""
    store_predictions(folder / "predictions", rows)
    env = fingerprint(root)
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    if threads:  # the rows were timed with the tier's threads, not this process's
        env["threads"] = threads[0] if len(threads) == 1 else threads
    board = {"tier": tier, "schema_version": SCHEMA_VERSION, "commit": env["commit"],
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "environment": env, "rows": rows, "summary": summarize(rows), "legacy": legacy_summary(rows)}
    out = folder / "plots"
    plots = pareto_plots(rows, out) + rate_curves(rows, out) + calibration_curves(rows, out)
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


def top1_interval(row: dict[str, Any]) -> list[float] | None:
    """A row's top-1 95% Wilson interval in points: stored, or from its top-1 and test size."""
    if row.get("top1_ci95"):
        return list(row["top1_ci95"])
    if not row.get("test_size"):
        return None
    low, high = stats.wilson_interval(round(row["top1"] * row["test_size"] / 100), row["test_size"])
    return [round(100 * low, 2), round(100 * high, 2)]


def legacy_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many rows are legacy, and from which commits."""
    legacy = [r for r in rows if r.get("provenance") == "legacy"]
    return {"rows": len(legacy), "commits": sorted({str(r.get("commit")) for r in legacy})}


def encode_predictions(predictions: np.ndarray, labels: np.ndarray) -> str:
    """The row's transport copy of predictions and labels: base64 of a 2 x N uint8 array."""
    return base64.b64encode(np.stack([predictions, labels]).astype(np.uint8).tobytes()).decode()


def decode_predictions(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(2, -1)


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


METRIC_KEYS = ("top1", "val_top1", "params", "nonzero_params", "size_bytes", "macs", "latency_ms", "speedup",
               "speedup_batch")


def dvc_metrics(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Numbers by case id (a flat mapping `dvc metrics diff` can compare between commits)."""
    return {r["case_id"]: {k: r[k] for k in METRIC_KEYS if isinstance(r.get(k), (int, float))} for r in rows}


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


def render_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    extra = sorted({k for r in rows for k in r} - set(ROW_KEYS) - set(JSON_ONLY))
    writer = csv.DictWriter(buffer, fieldnames=[*ROW_KEYS, *extra])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()
                         if k not in JSON_ONLY})
    return buffer.getvalue()


def _legacy_lines(board: dict[str, Any]) -> list[str]:
    legacy = board.get("legacy") or legacy_summary(board["rows"])
    if not legacy["rows"]:
        return []
    return [f"**{legacy['rows']} of {len(board['rows'])} rows are legacy** (`provenance: legacy`): measured before "
            "rows recorded their model md5 and intervals, and not re-measured since because their model is not at "
            f"hand (GPU-trained or hours of CPU training); from commits {', '.join(f'`{c[:10]}`' for c in legacy['commits'])}.",
            ""]


def render_markdown(board: dict[str, Any]) -> str:
    env = board["environment"]
    rounds = sorted({r["latency_rounds"] for r in board["rows"] if r.get("latency_rounds")})
    lines = [f"# Leaderboard: {board['tier']} tier", "",
             f"Generated {board['created']} from commit `{board['commit']}`"
             f"{' (dirty tree)' if env.get('dirty') else ''}; torch {env['torch']}, {env['cpu']}, "
             f"{env['threads']} threads.", "", *_legacy_lines(board),
             "Top-1: on the test split, with its 95% Wilson interval for the number of test images (shown per "
             "dataset). Latency: median over turns alternated with the reference, ± the interquartile range, "
             f"{'/'.join(map(str, rounds)) or '-'} turns per model; speed-up: reference median / case median in "
             "the same run, with a 95% bootstrap interval over the paired turns (README, \"How latency is "
             "measured\").", ""]
    for dataset in sorted({r["dataset"] for r in board["rows"]}):
        rows = [with_uncertainty(r) for r in board["rows"] if r["dataset"] == dataset]
        rows.sort(key=lambda r: (r["budget_kind"], r["budget_value"], -r["top1"]))
        sizes = sorted({r["test_size"] for r in rows if r.get("test_size")})
        half = [round(100 * stats.wilson_half_width(n), 1) for n in sizes]
        note = (f" ({', '.join(f'{n:,}' for n in sizes)} test images: top-1 intervals up to "
                f"±{'/'.join(map(str, half))} points)") if sizes else ""
        lines += [f"## {dataset}{note}", "", _table(rows, MD_COLUMNS), ""]
    if board.get("plots"):
        lines += ["# Plots", "", *[f"![{Path(p).stem}]({p})" for p in board["plots"]], ""]
    if board.get("summary"):
        lines += ["# Studies", "", "Mean top-1 over the listed seeds, ± the sample standard deviation; cost columns "
                  "are the seeds' maximum (size) or median (latency).", "", render_studies(board["summary"])]
    pruned = [r for r in board["rows"] if r.get("per_layer")]
    if pruned:
        lines += ["# Per-layer parameters of the pruned models", "",
                  "Non-zero conv/linear weights per layer in the reference and in the pruned model.", ""]
        for row in pruned:
            lines += [f"<details><summary>{row['case_id']}</summary>", "", _table(row["per_layer"], PER_LAYER_COLUMNS),
                      "", "</details>", ""]
    return "\n".join(lines)


PER_LAYER_COLUMNS = (("module", "module"), ("before", "params before"), ("after", "params after"),
                     ("difference", "difference"))
STUDY_COLUMNS = (("group_id", "case group"), ("model", "student / model"), ("teacher", "teacher"),
                 ("reference_top1", "reference top-1 (%)"), ("top1_text", "top-1 (%)"), ("val_top1", "val top-1 (%)"),
                 ("seeds_text", "seeds"), ("params", "params"), ("nonzero_params", "non-zero"),
                 ("sparsity", "sparsity"), ("size_bytes", "size (bytes)"), ("macs", "MACs"),
                 ("latency_ms", "latency b1 (ms)"), ("latency_ms_batch", "latency batch (ms)"),
                 ("speedup", "speed-up b1 (x)"), ("speedup_batch", "speed-up batch (x)"),
                 ("budget_met", "budget met"), ("train_seconds", "train (s)"))


def render_studies(summary: list[dict[str, Any]], heading: str = "##") -> str:
    """One Markdown table per study, best mean top-1 first."""
    lines = []
    for study in sorted({r["study"] for r in summary}):
        rows = sorted((r for r in summary if r["study"] == study), key=lambda r: -r["top1"])
        shown = [{**r, "top1_text": f"{r['top1']:.2f}" + (f" ± {r['top1_std']:.2f}" if r["top1_std"] is not None else ""),
                  "seeds_text": ",".join(map(str, r["seeds"]))} for r in rows]
        lines += [f"{heading} {study}", "", _table(shown, STUDY_COLUMNS), ""]
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> str:
    """A GitHub Markdown table of ``rows``; cells keep _fmt's formatting (no re-parsing of numbers)."""
    return tabulate([[_fmt(r.get(k, "-")) for k, _ in columns] for r in rows], headers=[h for _, h in columns],
                    tablefmt="github", disable_numparse=True)


def _fmt(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


TEACHER_COLUMNS = (("name", "teacher"), ("dataset", "dataset"), ("architecture", "architecture"),
                   ("params", "params"), ("top1_as_shipped", "test top-1 as shipped (%)"),
                   ("top1", "test top-1 (%)"), ("val_top1", "val top-1 (%)"), ("train_seconds", "train (s)"),
                   ("trained_on", "trained on"), ("recipe_text", "recipe"), ("source", "source"))


def render_teachers(metas: list[dict[str, Any]]) -> str:
    """Markdown table of teacher metadata (teachers/<name>.json)."""
    rows = []
    for meta in sorted(metas, key=lambda m: (m["dataset"], m["name"])):
        recipe = meta.get("recipe", {})
        rows.append({**meta, "recipe_text": f"{recipe.get('epochs')} ep, {recipe.get('optimizer')} lr "
                                            f"{recipe.get('lr')}, bs {recipe.get('batch_size')}, aug {recipe.get('augment')}"})
    return "\n".join(["# Teachers", "", "Generated from teachers/*.json by `slimbench teachers`. Top-1 on the full "
                      "test split; 'as shipped' is the public checkpoint before fine-tuning.", "",
                      "The public CIFAR ResNets were trained on all 50,000 CIFAR-10 training images, which are "
                      "the images of cifar10_jpeg's train split, validation part included: their validation "
                      "top-1 is optimistic. Only the test top-1 is a held-out figure for them.", "",
                      _table(rows, TEACHER_COLUMNS), ""])


def excerpt_markers(tier: str) -> tuple[str, str]:
    return f"<!-- leaderboard-excerpt:{tier}:start -->", f"<!-- leaderboard-excerpt:{tier}:end -->"


EXCERPT_COLUMNS = (("dataset", "dataset"), ("case_id", "case"), ("family", "family"),
                   ("top1_text", "top-1 (%) [95% CI]"), ("top1_delta", "Δ (pts)"), ("params", "params"),
                   ("sparsity", "sparsity"), ("size_bytes", "size (bytes)"), ("macs", "MACs"),
                   ("latency_text", "latency b1 (ms) ± IQR"), ("speedup_batch_text", "speed-up batch (x) [95% CI]"),
                   ("budget_met", "budget met"), ("provenance", "provenance"))


def update_readme_excerpt(readme: Path, board: dict[str, Any], datasets: list[str]) -> None:
    """Replace the README block between the tier's excerpt markers with rows of ``datasets`` and,
    where the README has the tier's studies markers, the block between them with the study tables."""
    text = readme.read_text()
    start, end = excerpt_markers(board["tier"])
    if start not in text or end not in text:
        raise ConfigError(f"{readme} lacks the {start} ... {end} markers; fix: add them")
    rows = [with_uncertainty(r) for r in board["rows"] if r["dataset"] in datasets and not r.get("study")]
    batch = rows[0].get("batch_size", "-") if rows else "-"
    stamp = (f"_{board['tier']} tier, commit `{str(board['commit'])[:10]}`, {board['environment']['cpu']}, "
             f"{board['created']}; batch {batch}; generated by `slimbench readme --tier {board['tier']}`._")
    text = _replace_between(text, start, end, f"{stamp}\n\n{_table(rows, EXCERPT_COLUMNS)}")
    s_start, s_end = f"<!-- studies:{board['tier']}:start -->", f"<!-- studies:{board['tier']}:end -->"
    if s_start in text and s_end in text:
        text = _replace_between(text, s_start, s_end, f"{stamp}\n\n{render_studies(board.get('summary', []), '####')}")
    write_text(readme, text)


def _replace_between(text: str, start: str, end: str, block: str) -> str:
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"
