"""The leaderboard row: the keys every row carries, the board schema version, and the one reader
of the rows a pytest-benchmark JSON carries.

`harness.measure` builds a row; the benchmark session stores it in the pytest-benchmark JSON's
``extra_info``; `leaderboard` (the board, merge), `render` (its CSV, Markdown, excerpts) and
`compare` (regression reports) read it through this module. The JSON schema is a contract other
tools read: keys may be added, never renamed or dropped.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .errors import ConfigError

SCHEMA_VERSION = 2  # of the board (leaderboard.json); 2: uncertainty, provenance and prediction sidecars
# The keys every row has, in the CSV's column order (a row may carry more: they follow, sorted).
ROW_KEYS = ("case_id", "method", "family", "dataset", "model", "teacher", "budget_kind", "budget_value",
            "budget_met", "top1", "val_top1", "reference_top1", "top1_delta", "params", "nonzero_params",
            "sparsity", "size_bytes", "macs", "latency_ms", "latency_ms_batch", "speedup", "seed",
            "train_seconds")
# Row keys too bulky for the CSV (they stay in the JSON).
JSON_ONLY = ("latency_samples_ms", "predictions_b64")

Row = dict[str, Any]


def missing_keys(row: Row, keys: tuple[str, ...] = ROW_KEYS) -> list[str]:
    """The keys of ``keys`` that ``row`` lacks, in their order."""
    return [k for k in keys if k not in row]


def is_benchmark_json(blob: Any) -> bool:
    """Whether a parsed JSON is a pytest-benchmark JSON (rather than a leaderboard)."""
    return "benchmarks" in blob


def benchmark_rows(blob: dict[str, Any]) -> list[Row]:
    """The rows a parsed pytest-benchmark JSON carries: each benchmark's ``extra_info`` with a
    ``case_id`` (a failed case keeps its timing and no row). KeyError or TypeError when malformed."""
    return [b["extra_info"] for b in blob["benchmarks"] if b.get("extra_info", {}).get("case_id")]


def rows_and_environment(blob: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    """(rows, environment) of a parsed leaderboard or pytest-benchmark JSON; a benchmark JSON's
    environment is its first row's, else pytest-benchmark's ``machine_info``."""
    if is_benchmark_json(blob):
        rows = benchmark_rows(blob)
        return rows, (rows[0].get("environment") if rows else None) or blob.get("machine_info", {})
    return blob["rows"], blob.get("environment", {})


def rows_from_benchmark_json(path: Path) -> list[Row]:
    """The rows of a pytest-benchmark JSON file, each with every key of ROW_KEYS."""
    try:
        rows = benchmark_rows(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable benchmark JSON {path} ({exc}); fix: rerun `slimbench run`") from None
    for row in rows:
        missing = missing_keys(row)
        if missing:
            raise ConfigError(f"{path}: case {row['case_id']} lacks {missing}; fix: rerun it")
    return rows


def uncached_cases(paths: list[Path]) -> list[str]:
    """The cases that the `--cached-only` runs behind these benchmark (or leaderboard) JSONs found
    no model for: not trained, not measured."""
    found: set[str] = set()
    for path in paths:
        try:
            found.update(json.loads(Path(path).read_text()).get("uncached_cases", []))
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"unreadable result {path} ({exc}); fix: rerun `slimbench run`") from None
    return sorted(found)


def encode_predictions(predictions: np.ndarray, labels: np.ndarray) -> str:
    """The row's transport copy of predictions and labels (``predictions_b64``): base64 of a 2 x N
    uint8 array. The board moves it to a sidecar file."""
    return base64.b64encode(np.stack([predictions, labels]).astype(np.uint8).tobytes()).decode()


def decode_predictions(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(2, -1)


def top1_interval(row: Row) -> list[float] | None:
    """A row's top-1 95% Wilson interval in points: stored, or from its top-1 and test size."""
    if row.get("top1_ci95"):
        return list(row["top1_ci95"])
    if not row.get("test_size"):
        return None
    low, high = stats.wilson_interval(round(row["top1"] * row["test_size"] / 100), row["test_size"])
    return [round(100 * low, 2), round(100 * high, 2)]


def legacy_summary(rows: list[Row]) -> dict[str, Any]:
    """How many rows are legacy (``provenance: legacy``), and from which commits."""
    legacy = [r for r in rows if r.get("provenance") == "legacy"]
    return {"rows": len(legacy), "commits": sorted({str(r.get("commit")) for r in legacy})}
