"""A board's renderings: the CSV and Markdown of results/<tier>/, the DVC metrics, the teachers
table and the README excerpts. Pure text from rows and boards (the board itself is
`leaderboard`); the plots are `plots`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tabulate import tabulate

from . import stats
from .errors import ConfigError
from .fileio import write_text
from .rows import JSON_ONLY, ROW_KEYS, legacy_summary

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


METRIC_KEYS = ("top1", "val_top1", "params", "nonzero_params", "size_bytes", "macs", "latency_ms", "speedup",
               "speedup_batch")


def dvc_metrics(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Numbers by case id (a flat mapping `dvc metrics diff` can compare between commits)."""
    return {r["case_id"]: {k: r[k] for k in METRIC_KEYS if isinstance(r.get(k), (int, float))} for r in rows}


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
             "measured\").", "", *_uncached_lines(board)]
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
    if any(r.get("runtimes") for r in board["rows"]):
        lines += ["# Runtimes", "", RUNTIME_NOTE, "", render_runtimes(board["rows"], board["environment"]), ""]
    pruned = [r for r in board["rows"] if r.get("per_layer")]
    if pruned:
        lines += ["# Per-layer parameters of the pruned models", "",
                  "Non-zero conv/linear weights per layer in the reference and in the pruned model.", ""]
        for row in pruned:
            lines += [f"<details><summary>{row['case_id']}</summary>", "", _table(row["per_layer"], PER_LAYER_COLUMNS),
                      "", "</details>", ""]
    return "\n".join(lines)


def _uncached_lines(board: dict[str, Any]) -> list[str]:
    """The cases whose model a `--cached-only` run did not find (e.g. not in the DVC remote)."""
    missing = board.get("uncached_cases") or []
    if not missing:
        return []
    return [f"**Not measured: no model in the case cache** ({len(missing)} case(s); not retrained by "
            "`--cached-only`; a row shown for one is an earlier run's): " + ", ".join(missing) + ".", ""]


PER_LAYER_COLUMNS = (("module", "module"), ("before", "params before"), ("after", "params after"),
                     ("difference", "difference"))
STUDY_COLUMNS = (("group_id", "case group"), ("model", "student / model"), ("teacher", "teacher"),
                 ("reference_top1", "reference top-1 (%)"), ("top1_text", "top-1 (%)"), ("val_top1", "val top-1 (%)"),
                 ("seeds_text", "seeds"), ("params", "params"), ("nonzero_params", "non-zero"),
                 ("sparsity", "sparsity"), ("size_bytes", "size (bytes)"), ("macs", "MACs"),
                 ("latency_ms", "latency b1 (ms)"), ("latency_ms_batch", "latency batch (ms)"),
                 ("speedup", "speed-up b1 (x)"), ("speedup_batch", "speed-up batch (x)"),
                 ("budget_met", "budget met"), ("train_seconds", "train (s)"))


RUNTIME_NOTE = ("Each case under each deployment runtime (docs/runtimes.md), timed in turns alternated with its "
                "reference under the same runtime; top-1 from a full test-set pass through the runtime (eager: the "
                "row's top-1); GFLOP/s = 2 x MACs x batch / latency, and its share of the machine's GEMM peak "
                "(int8 peak for 8-bit models).")
RUNTIME_COLUMNS = (("case_id", "case"), ("model", "model"), ("runtime", "runtime"), ("top1", "top-1 (%)"),
                   ("latency_text", "latency b1 (ms) ± IQR"), ("speedup_text", "speed-up b1 (x) [95% CI]"),
                   ("latency_batch_text", "latency batch (ms) ± IQR"),
                   ("speedup_batch_text", "speed-up batch (x) [95% CI]"), ("gflops_batch", "GFLOP/s batch"),
                   ("peak_text", "peak batch (%)"), ("compile_seconds", "compile (s)"), ("error", "error"))


def runtime_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per runtime of a row: its own keys (``latency_ms_<runtime>``...) under the eager names."""
    lines = []
    for name in row.get("runtimes") or ["eager"]:
        tail = "" if name == "eager" else f"_{name}"
        keys = {"latency_ms": f"latency_ms{tail}", "latency_ms_iqr": f"latency_ms{tail}_iqr",
                "latency_ms_batch": f"latency_ms_batch{tail}", "latency_ms_batch_iqr": f"latency_ms_batch{tail}_iqr",
                "speedup": f"speedup{tail}", "speedup_ci95": f"speedup{tail}_ci95",
                "speedup_batch": f"speedup_batch{tail}", "speedup_batch_ci95": f"speedup_batch{tail}_ci95",
                "gflops_batch": f"gflops_batch{tail}", "peak_fraction_batch": f"peak_fraction_batch{tail}",
                "top1": "top1" if name == "eager" else f"top1{tail}"}
        line = with_uncertainty({own: row.get(key) for own, key in keys.items()})
        fraction = line["peak_fraction_batch"]
        error = next((e.split(": ", 1)[1] for e in row.get("runtime_errors") or [] if e.startswith(f"{name}:")), "")
        line = {k: "-" if v is None else v for k, v in line.items()}  # a failed runtime's nulls
        lines.append({**line, "case_id": row["case_id"], "model": row.get("model"), "runtime": name,
                      "peak_text": "-" if fraction is None else f"{100 * fraction:.1f}",
                      "compile_seconds": (row.get("compile_seconds") or {}).get(name, "-"), "error": error or "-"})
    return lines


def render_runtimes(rows: list[dict[str, Any]], environment: dict[str, Any] | None = None) -> str:
    """The runtime table: a line per (case, runtime) of the rows timed under runtimes, and the
    machine's GEMM peaks they are read against."""
    timed = sorted((r for r in rows if r.get("runtimes")), key=lambda r: (r["dataset"], str(r.get("model")), r["case_id"]))
    peaks = (environment or {}).get("roofline") or next((r.get("environment", {}).get("roofline") for r in timed), None)
    head = (f"GEMM peak on this machine: {_fmt(peaks['gemm_gflops_fp32'])} GFLOP/s fp32, "
            f"{_fmt(peaks.get('gemm_gops_int8') or '-')} GOP/s int8 ({peaks.get('threads')} threads).\n\n") if peaks else ""
    return head + _table([line for r in timed for line in runtime_rows(r)], RUNTIME_COLUMNS)


def render_runtime_summary(rows: list[dict[str, Any]]) -> str:
    """The runtime table in brief (the README's): a line per case, per runtime its batch-1 and
    batch latency with the speed-up over its reference under the same runtime."""
    timed = [r for r in rows if r.get("runtimes")]
    names = [n for n in ("eager", "inductor", "onnxruntime", "openvino") if any(n in r["runtimes"] for r in timed)]
    columns = [("case_id", "case"), ("top1", "top-1 (%)")] + [
        (f"{n} {b}", f"{n} {b} ms (x ref)") for b in ("b1", "batch") for n in names]
    lines = []
    for row in timed:
        cells = {"case_id": row["case_id"], "top1": row["top1"]}
        for line in runtime_rows(row):
            for b, latency, speedup in (("b1", "latency_ms", "speedup"), ("batch", "latency_ms_batch", "speedup_batch")):
                ms, x = line[latency], line[speedup]
                cells[f"{line['runtime']} {b}"] = "-" if ms == "-" else f"{ms:.3g} ({x:.2f}x)" if x != "-" else f"{ms:.3g}"
        lines.append(cells)
    return _table(lines, tuple(columns))


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


def block_markers(tier: str) -> dict[str, tuple[str, str]]:
    """The generated blocks a page may hold for a tier: its excerpt, study tables, runtime table."""
    return {"excerpt": excerpt_markers(tier),
            **{kind: (f"<!-- {kind}:{tier}:start -->", f"<!-- {kind}:{tier}:end -->") for kind in ("studies", "runtimes")}}


EXCERPT_COLUMNS = (("dataset", "dataset"), ("case_id", "case"), ("family", "family"),
                   ("top1_text", "top-1 (%) [95% CI]"), ("top1_delta", "Δ (pts)"), ("params", "params"),
                   ("sparsity", "sparsity"), ("size_bytes", "size (bytes)"), ("macs", "MACs"),
                   ("latency_text", "latency b1 (ms) ± IQR"), ("speedup_batch_text", "speed-up batch (x) [95% CI]"),
                   ("budget_met", "budget met"), ("provenance", "provenance"))


def update_readme_excerpt(readme: Path, board: dict[str, Any], datasets: list[str]) -> None:
    """Replace each of the tier's generated blocks that ``readme`` has markers for (``block_markers``):
    the excerpt (rows of ``datasets``), the study tables, the runtime table."""
    text = readme.read_text()
    present = {kind: ends for kind, ends in block_markers(board["tier"]).items() if ends[0] in text and ends[1] in text}
    if not present:
        start, end = excerpt_markers(board["tier"])
        raise ConfigError(f"{readme} lacks the {start} ... {end} markers; fix: add them")
    rows = [with_uncertainty(r) for r in board["rows"] if r["dataset"] in datasets and not r.get("study")]
    batch = rows[0].get("batch_size", "-") if rows else "-"
    stamp = (f"_{board['tier']} tier, commit `{str(board['commit'])[:10]}`, {board['environment']['cpu']}, "
             f"{board['created']}; batch {batch}; generated by `slimbench readme --tier {board['tier']}`._")
    blocks = {"excerpt": lambda: _table(rows, EXCERPT_COLUMNS),
              "studies": lambda: render_studies(board.get("summary", []), "####"),
              "runtimes": lambda: render_runtime_summary(board["rows"])}
    for kind, (start, end) in present.items():
        text = _replace_between(text, start, end, f"{stamp}\n\n{blocks[kind]()}")
    write_text(readme, text)


def _replace_between(text: str, start: str, end: str, block: str) -> str:
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"
