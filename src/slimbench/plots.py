"""Leaderboard plots (matplotlib, PNG): pruning rate curves, one figure per dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def rate_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Non-zero params (x) vs validation top-1 (y), one line per pruning method, per dataset.

    Uses the rows with a sparsity budget; returns the PNG paths written (none without such rows).
    """
    written = []
    pruned = [r for r in rows if r["family"] == "prune" and r["budget_kind"] == "sparsity"]
    for dataset in sorted({r["dataset"] for r in pruned}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in sorted({_line(r) for r in pruned if r["dataset"] == dataset}):
            points = sorted((r["nonzero_params"], r["val_top1"]) for r in pruned
                            if r["dataset"] == dataset and _line(r) == label)
            ax.plot(*zip(*points), marker="o", label=label)
        dense = [r for r in rows if r["dataset"] == dataset and r["method"] == "reference"]
        if dense:
            ax.axhline(dense[0]["val_top1"], color="grey", linestyle="--", label="dense reference")
        ax.set(xscale="log", xlabel="non-zero parameters", ylabel="validation top-1 (%)",
               title=f"Pruning rate curves: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"rate_curves_{dataset}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=120, metadata={"Software": None})  # no version stamp: stable bytes
        plt.close(fig)
        written.append(path)
    return written


def _line(row: dict[str, Any]) -> str:
    epochs = row.get("settings", {}).get("finetune_epochs", 0)
    return f"{row['method']} ({'one-shot' if not epochs else f'{epochs} ep fine-tune'})"
