"""Leaderboard plots (matplotlib, PNG): pruning rate curves, PTQ calibration curves and runtime
speed-ups, per dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from .methods import METHODS  # noqa: E402


def rate_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Non-zero params (x) vs validation top-1 (y), one line per pruning method, per dataset.

    Uses the rows with a sparsity budget; returns the PNG paths written (none without such rows).
    """
    written = []
    pruned = [r for r in rows if drawn_in(r, "rate_curves") and r["budget_kind"] == "sparsity"]
    for dataset in sorted({r["dataset"] for r in pruned}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in sorted({row_label(r) for r in pruned if r["dataset"] == dataset}):
            points = sorted((r["nonzero_params"], r["val_top1"]) for r in pruned
                            if r["dataset"] == dataset and row_label(r) == label)
            ax.plot(*zip(*points), marker="o", label=label)
        dense = [r for r in rows if r["dataset"] == dataset and r["method"] in METHODS
                 and METHODS.get(r["method"]).is_reference]
        if dense:
            ax.axhline(dense[0]["val_top1"], color="grey", linestyle="--", label="dense reference")
        written.append(_finish(fig, ax, out_dir / f"rate_curves_{dataset}.png", xlabel="non-zero parameters",
                               ylabel="validation top-1 (%)", title=f"Pruning rate curves: {dataset}"))
    return written


def drawn_in(row: dict[str, Any], plot: str) -> bool:
    """Whether the row's method draws its rows in ``plot`` (``Method.plots``)."""
    return row["method"] in METHODS and plot in METHODS.get(row["method"]).plots


def row_label(row: dict[str, Any]) -> str:
    """A row's legend text, from its method (``Method.label``) and effective settings. Rows of
    boards measured before ``effective_settings`` existed get the method's defaults merged with
    their ``settings`` here; a method no longer registered is named as it is."""
    if row["method"] not in METHODS:
        return row["method"]
    method = METHODS.get(row["method"])
    return method.label({**method.settings, **(row.get("settings") or {}), **(row.get("effective_settings") or {})},
                        row.get("tag"))


def calibration_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Test top-1 (y) vs calibration images (x), one line per PTQ method and observer, per dataset
    and model, from the rows of studies; only lines with one row per size and two or more sizes
    (an alpha sweep at one size is not a calibration curve)."""
    lines: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        images = r.get("method_log", {}).get("calibration_images")
        if drawn_in(r, "calibration_curves") and images and r.get("study"):
            key = (r["dataset"], r["model"], row_label(r))
            lines.setdefault(key, []).append((images, r["top1"]))
    written = []
    for dataset, model in sorted({(d, m) for d, m, _ in lines}):
        curves = {label: sorted(points) for (d, m, label), points in lines.items()
                  if (d, m) == (dataset, model) and len({x for x, _ in points}) == len(points) > 1}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in sorted(curves.items()):
            ax.plot(*zip(*points), marker="o", label=label)
        float_top1 = next((r["reference_top1"] for r in rows if r["dataset"] == dataset and r["model"] == model
                           and r.get("method_log", {}).get("calibration_images")), None)
        if float_top1 is not None:
            ax.axhline(float_top1, color="grey", linestyle="--", label="float32 model")
        written.append(_finish(fig, ax, out_dir / f"calibration_{dataset}_{model}.png", xlabel="calibration images",
                               ylabel="test top-1 (%)", title=f"int8 PTQ calibration: {model} on {dataset}"))
    return written


def _finish(fig, ax, path: Path, **labels: str) -> Path:
    """Log x axis, labels, grid and legend of a one-panel figure, then save it; returns the path."""
    ax.set(xscale="log", **labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


PARETO_AXES = (("nonzero_params", "non-zero parameters"), ("size_bytes", "size (bytes, as saved)"), ("latency_ms", "latency at batch 1 (ms)"))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower x) and top-1 (higher y), by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def pareto_plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per dataset: top-1 vs params, size and latency, one colour per family, the Pareto front drawn."""
    written = []
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == dataset]
        families = sorted({r["family"] for r in mine})
        colours = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(families)}
        fig, axes = plt.subplots(1, len(PARETO_AXES), figsize=(15, 4.2), sharey=True)
        for ax, (key, label) in zip(axes, PARETO_AXES):
            for family in families:
                pts = [(r[key], r["top1"]) for r in mine if r["family"] == family and r.get(key)]
                if pts:
                    ax.scatter(*zip(*pts), s=18, color=colours[family], label=family, alpha=0.8)
            front = pareto_front([(r[key], r["top1"]) for r in mine if r.get(key)])
            if front:
                ax.step(*zip(*front), where="post", color="black", linewidth=1, label="Pareto front")
            xs = [r[key] for r in mine if r.get(key)]
            if xs and max(xs) > 10 * min(xs):  # log only where the costs span a decade
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(5))
                if key != "latency_ms":  # counts: 100 k, 1 M
                    ax.xaxis.set_major_formatter(EngFormatter())
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test top-1 (%)")
        if axes[0].get_legend_handles_labels()[0]:  # a board of rows without costs draws nothing
            axes[0].legend(fontsize=7)
        fig.suptitle(f"{dataset}: accuracy against cost (every case of the tier)")
        path = out_dir / f"pareto_{dataset}.png"
        _save(fig, path)
        written.append(path)
    return written


def runtime_plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per dataset, the rows timed under runtimes: speed-up over the reference under the same
    runtime (bars, one colour per runtime) at batch 1 and at the tier's batch size."""
    written = []
    timed = [r for r in rows if r.get("runtimes")]
    for dataset in sorted({r["dataset"] for r in timed}):
        mine = sorted((r for r in timed if r["dataset"] == dataset), key=lambda r: (str(r.get("model")), r["case_id"]))
        names = list(dict.fromkeys(n for r in mine for n in r["runtimes"]))
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(mine) + 4), 4.5), sharey=False)
        width = 0.8 / len(names)
        for ax, (part, title) in zip(axes, (("", "batch 1"), ("_batch", f"batch {mine[0].get('batch_size', '')}"))):
            for i, name in enumerate(names):
                key = f"speedup{part}" + ("" if name == "eager" else f"_{name}")
                values = [r.get(key) or 0.0 for r in mine]
                ax.bar([j + i * width for j in range(len(mine))], values, width, label=name)
            ax.axhline(1.0, color="grey", linewidth=1)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(mine))])
            ax.set_xticklabels([r["case_id"].replace(f"-{dataset}", "") for r in mine], rotation=60, ha="right",
                               fontsize=7)
            ax.set(ylabel="speed-up over the reference, same runtime (x)", title=title)
            ax.grid(alpha=0.3, axis="y")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{dataset}: which runtime turns which compression into speed")
        path = out_dir / f"runtimes_{dataset}.png"
        _save(fig, path)
        written.append(path)
    return written
