"""The headlines table: each course result beside the slimbench row that answers it, the gap, whether
the target is met, and the commands that rerun the row (issue 15).

Rows come from a tier's board (``leaderboard.json``); a headline names its rows by group id (the
case id without ``-seedN``), so several seeds give mean ± standard deviation. A row that is not on
the board renders as "not yet run", never as a number.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError
from .rows import Row

METRICS = ("top1", "drop")  # test top-1 (%), or points below the row's reference_top1


@dataclass(frozen=True)
class Headline:
    """One course result and the slimbench rows that answer it.

    Attributes:
        name: what the row is ("ResNet-20, global unstructured sparsity >= 92%").
        course: the course's result as quoted ("-2.04 points (90.56% from 92.60%)").
        course_value: that result in ``metric``'s terms (a top-1, or points lost).
        group: the board's ``group_id`` of the rows (a case id for a single-seed case).
        case_pattern: the ``--case`` pattern that selects exactly those cases.
        metric: ``top1`` (higher is better) or ``drop`` (reference_top1 - top1, lower is better).
        target: top-1 at least this, or a drop of at most this.
        seeds: how many seeds the target asks for.
    """

    name: str
    course: str
    course_value: float
    group: str
    case_pattern: str
    metric: str
    target: float
    seeds: int = 1

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"headline {self.name!r}: unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")


# The three rows of issue 15, answered by the `hl` cases of the standard tier (docs/headlines.md).
HEADLINES = (
    Headline("Fashion-MNIST student <= 100,000 params, distilled", "93.30% (teacher 92.4%)", 93.30,
             "kd_logits-fashion_mnist-params100k-hl", "kd_logits-fashion_mnist-params100k-hl-seed*",
             "top1", 93.5, seeds=3),
    Headline("ResNet-20, global unstructured sparsity >= 92%",
             "-2.04 points (90.56% from 92.60%, lossless CIFAR-10)", 2.04,
             "prune_iterative-cifar10_jpeg-sparsity92-hl", "prune_iterative-cifar10_jpeg-sparsity92-hl",
             "drop", 1.5),
    Headline("ResNet-56, channels removed to half the MACs", "-0.60 points (93.53 -> 92.93, Group-L1 at 2.12x)",
             0.60, "prune_structured-cifar10_jpeg-macs2x-hl-resnet56",
             "prune_structured-cifar10_jpeg-macs2x-hl-resnet56", "drop", 0.5),
)


@dataclass(frozen=True)
class Outcome:
    """What the board says about one headline: its rows' mean and std in the metric, or nothing."""

    headline: Headline
    rows: list[Row]

    @property
    def values(self) -> list[float]:
        if self.headline.metric == "top1":
            return [float(r["top1"]) for r in self.rows]
        return [float(r["reference_top1"]) - float(r["top1"]) for r in self.rows]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.rows else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.rows) > 1 else None

    @property
    def gap(self) -> float | None:
        """Points ahead of the course (positive) or behind it (negative)."""
        if self.mean is None:
            return None
        h = self.headline
        return self.mean - h.course_value if h.metric == "top1" else h.course_value - self.mean

    @property
    def met(self) -> str:
        h = self.headline
        if not self.rows:
            return "not yet run"
        if len(self.rows) < h.seeds:
            return f"no ({len(self.rows)} of {h.seeds} seeds)"
        if not all(r.get("budget_met") for r in self.rows):
            return "no (budget not met)"
        ok = self.mean >= h.target if h.metric == "top1" else self.mean <= h.target
        return "yes" if ok else "no"


def outcomes(rows: Iterable[Row], headlines: Iterable[Headline] = HEADLINES) -> list[Outcome]:
    """Each headline with its board rows (matched by ``group_id``, else by ``case_id``)."""
    rows = list(rows)
    return [Outcome(h, [r for r in rows if (r.get("group_id") or r["case_id"]) == h.group]) for h in headlines]


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def slimbench_cell(o: Outcome) -> str:
    if not o.rows:
        return "not yet run"
    top1 = [float(r["top1"]) for r in o.rows]
    seeds = f", {len(o.rows)} seeds" if len(o.rows) > 1 else ""
    top1_text = _pm(statistics.fmean(top1), statistics.stdev(top1) if len(top1) > 1 else None)
    if o.headline.metric == "top1":
        return f"{top1_text}%{seeds}"
    reference = statistics.fmean(float(r["reference_top1"]) for r in o.rows)
    delta = f"{-o.mean:+.2f}" + ("" if o.std is None else f" ± {o.std:.2f}")  # top-1 minus the reference
    return f"{delta} points ({top1_text}% from {reference:.2f}%{seeds})"


def rerun_command(h: Headline, tier: str = "standard", jobs: int = 3) -> str:
    case = f"--case '{h.case_pattern}'"
    return (f"`slimbench compress --tier {tier} {case} --device cuda --jobs {jobs}` then "
            f"`slimbench run --tier {tier} --cached-only {case}`")


def target_text(h: Headline) -> str:
    text = f"top-1 >= {h.target:g}%" if h.metric == "top1" else f"within {h.target:g} points"
    return text + (f", mean of {h.seeds} seeds" if h.seeds > 1 else "")


def render(rows: Iterable[Row], headlines: Iterable[Headline] = HEADLINES, tier: str = "standard") -> str:
    """The Markdown table: course result, slimbench row, gap (+ = ahead of the course), target, met, rerun."""
    lines = ["| row | course | slimbench | gap (pts, + = ahead) | target | met | rerun |",
             "|---|---|---|---|---|---|---|"]
    for o in outcomes(rows, headlines):
        h = o.headline
        gap = "—" if o.gap is None else f"{o.gap:+.2f}"
        jobs = max(1, h.seeds)
        lines.append(f"| {h.name} | {h.course} | {slimbench_cell(o)} | {gap} | {target_text(h)} | {o.met} | "
                     f"{rerun_command(h, tier, jobs)} |")
    return "\n".join(lines) + "\n"


def render_board(path: str, tier: str = "standard") -> str:
    """``render`` over the rows of a board file (``results/<tier>/leaderboard.json``)."""
    import json

    try:
        rows = json.loads(open(path).read())["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"unreadable board {path} ({exc}); fix: run `slimbench run --tier {tier}` first") from None
    return render(rows, tier=tier)


if __name__ == "__main__":  # python -m slimbench.headlines [results/standard/leaderboard.json]
    import sys

    print(render_board(sys.argv[1] if len(sys.argv) > 1 else "results/standard/leaderboard.json"), end="")
