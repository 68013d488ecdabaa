"""The `slimbench` command: a thin layer over the functions the benchmarks call."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from .errors import ConfigError, DiskFullError, SlimbenchError
from .fileio import clean_stale_temporaries, temporary_prefix


def cmd_list(args: argparse.Namespace) -> None:
    from .cases import expand_cases, tier_names
    from .datasets import DATASETS
    from .methods import METHODS
    from .models import MODELS

    if args.what == "datasets":
        for name in DATASETS.list():
            print(f"{name:14s} {DATASETS.get(name).description}")
    elif args.what == "models":
        print("\n".join(MODELS.list(args.include)))
    elif args.what == "methods":
        for name in METHODS.list(args.include):
            method = METHODS.get(name)
            print(f"{name:24s} {method.family:9s} budgets: {', '.join(method.budget_kinds)}")
    elif args.what == "tiers":
        print("\n".join(tier_names()))
    else:
        for case in expand_cases(args.tier):
            print(case.case_id)


class CaseOutcomes:
    """pytest plugin: which benchmark cases passed and which failed (setup, call or teardown)."""

    def __init__(self) -> None:
        self.passed: set[str] = set()
        self.failed: set[str] = set()
        self.uncached: set[str] = set()  # skipped by --cached-only: no model in the cache

    def pytest_runtest_logreport(self, report) -> None:
        case = report.nodeid.rpartition("[")[2].rstrip("]") if report.nodeid.endswith("]") else None
        if case is None:
            return
        if report.failed:
            self.failed.add(case)
        elif report.when == "call" and report.passed:
            self.passed.add(case)
        elif report.skipped and "not in the case cache" in str(report.longrepr):
            self.uncached.add(case)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a tier's benchmark cases through pytest, then publish the rows of the cases that passed."""
    import pytest

    from .cases import expand_cases, select
    from .config import default_paths

    paths = default_paths()
    if not select(expand_cases(args.tier, paths), args.case):
        raise SlimbenchError(f"no case of tier {args.tier} matches {args.case!r}; "
                             f"fix: see `slimbench list cases --tier {args.tier}`")
    json_path = Path(args.benchmark_json) if args.benchmark_json else run_json_path(paths.root, args.tier)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(json_path.parent)
    partial = json_path.with_name(f"{temporary_prefix(json_path)}partial.tmp")  # renamed into place when pytest is done
    argv = [str(paths.root / "benchmarks"), "-m", args.tier, f"--benchmark-json={partial}",
            "--benchmark-columns=median,iqr,rounds", "-p", "no:cacheprovider"]
    argv += ["--case", args.case] if args.case else []
    argv += ["--cached-only"] if args.cached_only else []
    argv += ["--shard", args.shard] if args.shard else []
    argv += ["--strict-budgets"] if args.strict_budgets else []
    outcomes = CaseOutcomes()
    try:
        status = int(pytest.main(argv + args.pytest_args, plugins=[outcomes]))
        if partial.is_file() or (outcomes.uncached and status in (0, 1)):  # none measured: no JSON from pytest
            finish_benchmark_json(partial, outcomes)
            os.replace(partial, json_path)
    finally:
        partial.unlink(missing_ok=True)
    if outcomes.failed:
        print(f"slimbench: {len(outcomes.failed)} case(s) failed, their rows are not published: "
              f"{', '.join(sorted(outcomes.failed))}", file=sys.stderr)
    if status not in (0, 1) or not json_path.is_file():  # interrupted, unusable arguments, no case ran
        print(f"slimbench: pytest exited with {status}; leaderboard of tier {args.tier} left unchanged",
              file=sys.stderr)
        return status or 1
    passed = outcomes.passed - outcomes.failed
    publish_hint = f"publish them with `slimbench report --tier {args.tier} --from {json_path}`"
    if args.no_report:
        print(f"slimbench: rows in {json_path}; {publish_hint}")
    elif passed or outcomes.uncached:  # a --cached-only run lists the models it lacked
        try:
            report(args.tier, json_path, keep=passed)
        except DiskFullError as exc:  # the run's rows are safe in its benchmark JSON
            raise DiskFullError(f"{exc}; this run's rows are kept in {json_path}: {publish_hint}") from None
    return status


def finish_benchmark_json(path: Path, outcomes: CaseOutcomes) -> None:
    """Keep a failed case's timing in the benchmark JSON but not its row, so that no later
    `slimbench report` publishes it; list the cases a ``--cached-only`` run found no model for
    (``uncached_cases``; the JSON is made when pytest-benchmark wrote none)."""
    blob = json.loads(path.read_text()) if path.is_file() else {"benchmarks": []}
    for bench in blob.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("case_id") in outcomes.failed:
            bench["extra_info"] = {"failed_case_id": info["case_id"]}
    blob["uncached_cases"] = sorted(outcomes.uncached)
    path.write_text(json.dumps(blob, indent=4))


def run_json_path(root: Path, tier: str) -> Path:
    """Each run's own pytest-benchmark JSON: results/runs/<tier>/<UTC time>-<pid>.json."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return root / "results" / "runs" / tier / f"{stamp}-{os.getpid()}.json"


def use_device(name: str | None) -> None:
    """--device overrides $SLIMBENCH_DEVICE for this process (training.device() reads it)."""
    if name:
        os.environ["SLIMBENCH_DEVICE"] = name


def cmd_compress(args: argparse.Namespace) -> int:
    """Train/compress a tier's cases into the case cache without measuring (e.g. on a GPU machine;
    a later `slimbench run` on the target machine reuses the models and measures them there),
    ``--jobs`` of them at once, in worker processes or as submitit jobs (executors.py). Where the
    tier's cache is a DVC stage's output, it is then recorded for `dvc push` (model_store.py)."""
    from . import executors, model_store
    from .cases import load_tier
    from .config import project_root

    use_device(args.device)
    plan = executors.plan(args, load_tier(args.tier))
    cases = compress_selection(args)
    if not cases:
        raise SlimbenchError(f"no case of tier {args.tier} matches {args.case} (shard {args.shard}); "
                             f"fix: see `slimbench list cases --tier {args.tier}`")
    status = executors.compress(plan, cases, args.summary_json)
    recorded = model_store.record(project_root(), args.tier)
    if recorded:
        print(recorded, flush=True)
    return status


def compress_selection(args: argparse.Namespace) -> list:
    """The cases `compress` makes: those matching any --case pattern (all without one), in tier order."""
    from .cases import expand_cases, select, shard

    every = expand_cases(args.tier)
    chosen = {c.case_id for pattern in args.case or [None] for c in select(every, pattern)}
    return shard([c for c in every if c.case_id in chosen], args.shard)


def cmd_throughput(args: argparse.Namespace) -> None:
    """Training images/s, the trainer against the loop it replaced; recorded in results/throughput.json."""
    import torch

    from . import throughput
    from .datasets import load_splits
    from .teachers import load_teacher
    from .training import device

    if args.merge:  # a measurement made elsewhere (e.g. on a GPU machine), added to --out
        for key, entry in json.loads(Path(args.merge).read_text())["devices"].items():
            throughput.record(Path(args.out), entry)
            print(f"added {key} from {args.merge} to {args.out}")
        return
    use_device(args.device)
    torch.set_num_threads(args.threads)
    dev = device()
    data, teacher = load_splits(args.dataset), load_teacher(args.teacher)[0]
    setups = tuple(s for s in throughput.SETUPS if not args.student or s.student in args.student)
    entry = throughput.run(data, teacher, dev, args.batch_size, args.rounds, args.steps, args.warmup, setups)
    throughput.record(Path(args.out), entry)
    print(f"recorded in {args.out} and {Path(args.out).with_suffix('.md')}")


def publish(tier: str, rows: list[dict], source: str, uncached: list[str] = ()) -> None:
    """Merge ``rows`` into results/<tier>/ (leaderboard JSON, CSV, Markdown, plots); ``uncached``:
    the cases a ``--cached-only`` run found no model for."""
    from . import leaderboard
    from .cases import expand_cases
    from .config import default_paths

    paths = default_paths()
    board = leaderboard.update(paths.results(tier), tier, rows, [c.case_id for c in expand_cases(tier, paths)],
                               paths.root, uncached)
    print(f"{tier}: {len(rows)} case(s) from {source} -> {paths.results(tier)}/leaderboard.json "
          f"({len(board['rows'])} rows)")


def report(tier: str, json_path: Path, keep: set[str] | None = None) -> None:
    """Publish the rows of a benchmark JSON (only the cases in ``keep`` when given)."""
    from .rows import rows_from_benchmark_json, uncached_cases

    rows = rows_from_benchmark_json(json_path)
    if keep is not None:
        rows = [r for r in rows if r["case_id"] in keep]
    publish(tier, rows, str(json_path), uncached_cases([json_path]))


def cmd_report(args: argparse.Namespace) -> None:
    from .config import default_paths

    report(args.tier, Path(args.source or default_paths().results(args.tier) / "benchmark.json"))


def cmd_merge(args: argparse.Namespace) -> None:
    """Join shard results into the tier's leaderboard (refusing a case found in two shards)."""
    from . import leaderboard
    from .rows import uncached_cases

    rows = leaderboard.merge_sources([Path(p) for p in args.sources])
    publish(args.tier, rows, f"{len(args.sources)} shard file(s)", uncached_cases([Path(p) for p in args.sources]))


def cmd_compare(args: argparse.Namespace) -> int:
    """Markdown regression report of NEW against OLD; exit 1 on a regression or a missing case, 2 on
    unreadable input."""
    from . import compare
    from .cases import in_shard
    from .config import default_paths, load_params
    from .fileio import write_text

    paths = default_paths()
    if not (args.old and args.new) and not args.tier:
        raise SlimbenchError("compare needs OLD and NEW, or --tier T (baselines/T.json against "
                             "results/T/leaderboard.json); fix: add one of them")
    old_path = Path(args.old or paths.root / "baselines" / f"{args.tier}.json")
    new_path = Path(args.new or paths.results(args.tier) / "leaderboard.json")
    given = {"top1_drop": args.top1_drop, "latency_ratio": args.latency_ratio, "alpha": args.alpha}
    thresholds = {**load_params(paths.root).get("compare", {}), **{k: v for k, v in given.items() if v is not None}}
    old, new = compare.load_board(old_path), compare.load_board(new_path)
    if args.shard:  # a shard's board against its own part of the baseline
        old.rows = {k: v for k, v in old.rows.items() if in_shard(k, args.shard)}
    report = compare.compare(old.rows, new.rows, old.environment, new.environment, thresholds,
                             old.predictions, new.predictions, new.uncached)
    text = compare.render(report, str(old_path), str(new_path), args.allow_missing)
    if args.out:
        write_text(Path(args.out), text)
    print(text)
    return compare.exit_status(report, args.allow_missing)


def cmd_timeit(args: argparse.Namespace) -> None:
    """Standalone timing of one case's model and its reference with torch.utils.benchmark
    (adaptive_autorange, one model at a time), beside the harness's paired turns: the check that
    the two methods agree."""
    import torch
    from torch.utils.benchmark import Timer

    from . import harness, metrics
    from .cases import expand_cases, load_tier, select

    tier = load_tier(args.tier)
    torch.set_num_threads(tier.threads)
    cases = select(expand_cases(args.tier), args.case)
    if len(cases) != 1:
        raise SlimbenchError(f"--case {args.case!r} matches {len(cases)} cases of tier {args.tier}; fix: name one "
                             f"(`slimbench list cases --tier {args.tier}`)")
    outcome = harness.compress_case(cases[0])
    for batch in (1, tier.batch_size):
        x = harness.example_input(outcome.data, batch)
        standalone = {}
        for name, model in (("reference", outcome.reference.eval()), ("case", outcome.model.eval())):
            timer = Timer("forward(x)", globals={"forward": harness.inference_fn(model), "x": x},
                          num_threads=tier.threads)
            m = timer.adaptive_autorange(threshold=0.1, max_run_time=args.seconds)
            standalone[name] = m.median * 1000
            print(f"batch {batch} {name}: standalone median {m.median * 1000:.4g} ms, IQR {m.iqr * 1000:.3g} ms "
                  f"({len(m.times)} blocks)")
        paired = harness.latency_fields(metrics.paired_latency(outcome.reference, outcome.model, x,
                                                               tier.latency_rounds, tier.latency_warmup), "")
        low, high = paired["speedup_ci95"]
        print(f"batch {batch}: speed-up standalone {standalone['reference'] / standalone['case']:.3f}x; "
              f"paired turns {paired['speedup']:.3f}x [95% CI {low:.3f}, {high:.3f}] ({tier.latency_rounds} turns "
              f"of {paired['forwards_per_turn']} forwards)")


def committed_board(tier: str):
    """(paths, path, board) of results/<tier>/leaderboard.json; a clear error when it is missing."""
    from . import leaderboard
    from .config import default_paths

    paths = default_paths()
    source = paths.results(tier) / "leaderboard.json"
    board = leaderboard.load(source)
    if board is None:
        raise SlimbenchError(f"no leaderboard at {source}; fix: run `slimbench run --tier {tier}` first")
    return paths, source, board


def cmd_baseline(args: argparse.Namespace) -> None:
    """Copy results/<tier>/leaderboard.json to baselines/<tier>.json (what nightly compares against)."""
    from .fileio import write_json

    from .compare import predictions_dir

    paths, source, board = committed_board(args.tier)
    target = paths.root / "baselines" / f"{args.tier}.json"
    sidecars = predictions_dir(target)
    shutil.rmtree(sidecars, ignore_errors=True)
    if predictions_dir(source).is_dir():
        shutil.copytree(predictions_dir(source), sidecars)
    write_json(target, board)
    print(f"{target} <- {source} ({len(board['rows'])} rows, commit {board.get('commit')}; predictions in {sidecars})")


def cmd_readme(args: argparse.Namespace) -> None:
    """Refresh the leaderboard excerpt (and study tables) of a tier in README.md and docs/*.md,
    wherever its markers are, from the committed board (no rerun)."""
    from .render import block_markers, excerpt_markers, update_readme_excerpt

    paths, source, board = committed_board(args.tier)
    start, _ = excerpt_markers(args.tier)
    starts = [first for first, _ in block_markers(args.tier).values()]
    pages = [p for p in [paths.root / "README.md", *sorted((paths.root / "docs").glob("*.md"))]
             if p.is_file() and any(first in p.read_text() for first in starts)]
    if not pages:
        raise SlimbenchError(f"no {start} marker in README.md or docs/*.md; fix: add the tier's excerpt markers")
    for page in pages:
        update_readme_excerpt(page, board, args.datasets)
        print(f"{page.relative_to(paths.root)}: excerpt refreshed from {source}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from .datasets import prepare

    raw = prepare(args.name, force=True)
    print(f"{args.name}: {len(raw.train)} train, {len(raw.test)} test, source md5 {raw.source_md5}")


def cmd_teacher(args: argparse.Namespace) -> None:
    from .teachers import train_teacher

    use_device(args.device)
    meta = train_teacher(args.name)
    shipped = f", as shipped {meta['top1_as_shipped']}%" if "top1_as_shipped" in meta else ""
    print(f"{args.name}: test top-1 {meta['top1']}% (val {meta['val_top1']}%){shipped}, "
          f"{meta['params']:,} params, {meta['train_seconds']} s")


def cmd_teachers(args: argparse.Namespace) -> None:
    from .config import default_paths
    from .fileio import write_text
    from .render import render_teachers
    from .teachers import TABLE_KEYS, read_teacher_meta

    paths = default_paths()
    metas = [read_teacher_meta(p, TABLE_KEYS) for p in sorted(paths.teachers.glob("*.json"))]
    text = render_teachers(metas)
    write_text(paths.root / "results" / "TEACHERS.md", text)
    print(text)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate tiers of params.yaml (all by default): one line per problem, exit 2 if any; budgets
    known to be out of reach are warnings (the data and teachers must be at hand to know them)."""
    from .cases import expand_cases, tier_names, tier_problems
    from .config import project_root
    from .executors import configured
    from .feasibility import infeasible_cases

    tiers = [args.tier] if args.tier else tier_names()
    problems = [p for tier in tiers for p in tier_problems(tier)]
    try:
        configured(project_root())  # the executor: section `compress --executor local|slurm` reads
    except ConfigError as exc:
        problems.append(str(exc))
    for problem in problems:
        print(problem)
    if problems:
        print(f"slimbench: {len(problems)} problem(s) in params.yaml (tiers: {', '.join(tiers)})", file=sys.stderr)
        return 2
    out_of_reach = [line for tier in tiers for line in infeasible_cases(expand_cases(tier)).values()]
    for line in out_of_reach:
        print(f"warning: {line} (`run --strict-budgets` refuses it)")
    print(f"slimbench check: params.yaml OK (tiers: {', '.join(tiers)})"
          + (f"; {len(out_of_reach)} budget(s) out of reach" if out_of_reach else ""))
    return 0


TIER_COMMANDS = ("run", "compress", "merge", "baseline", "timeit", "report")


def checked_tier(args: argparse.Namespace) -> int | None:
    """Validate the tier the command names before anything trains: its problems are errors (exit
    2); another tier's problems are a one-line warning each tier."""
    from .cases import tier_names, tier_problems

    tier = args.tier if args.command in TIER_COMMANDS or (args.command == "list" and args.what == "cases") else None
    if tier is None:
        return None
    problems = tier_problems(tier)
    for problem in problems:
        print(f"slimbench: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    for other in tier_names():
        count = len(tier_problems(other)) if other != tier else 0
        if count:
            print(f"slimbench: warning: tier {other} has {count} problem(s); see slimbench check --tier {other}",
                  file=sys.stderr)
    return None


def checked_budgets(args: argparse.Namespace) -> int | None:
    """`compress`: one line per selected case whose budget is out of reach (known before training);
    with --strict-budgets these are errors (exit 2), otherwise warnings. (`run` has the benchmark
    session do the same check at collection, for `pytest benchmarks` too.)"""
    from .feasibility import infeasible_cases

    if args.command != "compress":
        return None
    lines = infeasible_cases(compress_selection(args)).values()
    for line in lines:
        if args.strict_budgets:
            print(f"slimbench: error: {line}; fix: change the budget or the model, or run without --strict-budgets",
                  file=sys.stderr)
        else:
            print(f"slimbench: warning: {line}; the run goes on and the case cannot meet its budget "
                  "(--strict-budgets refuses it)", file=sys.stderr)
    return 2 if lines and args.strict_budgets else None


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """`compress --executor local|slurm`: submitit job options (default: params.yaml `executor:`)."""
    g = p.add_argument_group("submitit jobs (--executor local|slurm; default: params.yaml executor:)")
    g.add_argument("--timeout-min", type=int, default=None, help="minutes per job before it is killed")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per job (slurm)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per job (slurm)")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per job (slurm; >= 1 with --device cuda)")
    for name in ("partition", "qos", "account", "constraint"):
        g.add_argument(f"--{name}", default=None, help=f"Slurm --{name}")
    g.add_argument("--jobs-folder", default=None, help="job logs go to JOBS_FOLDER/<tier>/ "
                   "(default .slimbench-jobs in the project root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list datasets, models, methods, tiers or a tier's cases")
    p.add_argument("what", choices=["datasets", "models", "methods", "tiers", "cases"])
    p.add_argument("--include", default=None, help="wildcard filter (models, methods)")
    p.add_argument("--tier", default="smoke", help="tier for `list cases`")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("run", help="run a tier's cases and update its leaderboard")
    p.add_argument("--tier", required=True)
    p.add_argument("--case", default=None, help="shell-style pattern over case ids")
    p.add_argument("--benchmark-json", default=None,
                   help="default: a file of this run's own, results/runs/<tier>/<time>-<pid>.json")
    p.add_argument("--no-report", action="store_true", help="only write the benchmark JSON")
    p.add_argument("--cached-only", action="store_true",
                   help="measure only cases whose model is cached (made by `slimbench compress`); skip the rest")
    p.add_argument("--shard", default=None, help="i/n: only the i-th of n stable shards of the cases "
                   "(merge the shards' --benchmark-json files with `slimbench merge`)")
    p.add_argument("--strict-budgets", action="store_true",
                   help="refuse (exit 2, before training) cases whose budget is known to be out of reach")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("merge", help="join shard results (benchmark or leaderboard JSONs) into a tier's leaderboard")
    p.add_argument("--tier", required=True)
    p.add_argument("sources", nargs="+", help="the shards' --benchmark-json files")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("compare", help="regression report of NEW against OLD (exit 1: regression, 2: unreadable)")
    p.add_argument("old", nargs="?", help="baseline leaderboard JSON (default: baselines/<tier>.json)")
    p.add_argument("new", nargs="?", help="new leaderboard JSON (default: results/<tier>/leaderboard.json)")
    p.add_argument("--tier", default=None)
    p.add_argument("--top1-drop", type=float, default=None, help="points (default: params.yaml compare.top1_drop)")
    p.add_argument("--latency-ratio", type=float, default=None, help="default: params.yaml compare.latency_ratio")
    p.add_argument("--alpha", type=float, default=None,
                   help="significance level of the McNemar and Mann-Whitney tests (default: params.yaml compare.alpha)")
    p.add_argument("--allow-missing", action="store_true", help="cases of OLD missing from NEW do not fail")
    p.add_argument("--shard", default=None, help="i/n: compare with the baseline's cases of this shard only")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("timeit", help="time one case and its reference standalone (torch.utils.benchmark) "
                       "beside the harness's paired turns")
    p.add_argument("--tier", required=True)
    p.add_argument("--case", required=True, help="one case id (or a pattern matching one)")
    p.add_argument("--seconds", type=float, default=5.0, help="adaptive_autorange's max_run_time per model")
    p.set_defaults(func=cmd_timeit)
    p = sub.add_parser("baseline", help="refresh baselines/<tier>.json from results/<tier>/leaderboard.json")
    p.add_argument("--tier", required=True)
    p.set_defaults(func=cmd_baseline)
    p = sub.add_parser("compress", help="train/compress a tier's cases into the cache, no measuring")
    p.add_argument("--tier", required=True)
    p.add_argument("--case", action="append", default=None, help="shell-style pattern over case ids (repeatable)")
    p.add_argument("--shard", default=None, help="i/n: only the i-th of n stable shards of the cases")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: $SLIMBENCH_DEVICE or cpu)")
    p.add_argument("--jobs", type=int, default=1, help="cases compressed at once (default 1): worker processes "
                   "(pool), subprocesses (local) or the Slurm job array's parallelism")
    p.add_argument("--executor", choices=["pool", "local", "slurm"], default="pool",
                   help="pool: worker processes of this one (default); local: submitit jobs on this machine; "
                   "slurm: submitit jobs through sbatch")
    add_executor_options(p)
    p.add_argument("--summary-json", default=None, help="also write each case's outcome, the wall time and the "
                   "machine here")
    p.add_argument("--strict-budgets", action="store_true",
                   help="refuse (exit 2, before training) cases whose budget is known to be out of reach")
    p.set_defaults(func=cmd_compress)
    p = sub.add_parser("throughput", help="training images/s of the trainer against the loop it replaced "
                       "(results/throughput.json)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: $SLIMBENCH_DEVICE or cpu)")
    p.add_argument("--threads", type=int, default=2, help="host threads (default 2, the tiers')")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per setup")
    p.add_argument("--steps", type=int, default=3, help="optimisation steps per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--student", nargs="*", default=None, help="only these students (default: ResNet-8 and -20)")
    p.add_argument("--dataset", default="cifar10_jpeg")
    p.add_argument("--teacher", default="cifar10_jpeg_resnet56")
    p.add_argument("--out", default="results/throughput.json")
    p.add_argument("--merge", default=None, help="measure nothing: add the devices of this throughput JSON to --out")
    p.set_defaults(func=cmd_throughput)
    p = sub.add_parser("report", help="rebuild a tier's leaderboard from a benchmark JSON")
    p.add_argument("--tier", required=True)
    p.add_argument("--from", dest="source", default=None, help="default: results/<tier>/benchmark.json")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("readme", help="refresh the tier's excerpt in README.md / docs/*.md from results/<tier>/")
    p.add_argument("--tier", default="smoke")
    p.add_argument("--datasets", nargs="+", default=["fashion_mnist", "cifar10_jpeg"])
    p.set_defaults(func=cmd_readme)
    p = sub.add_parser("prepare", help="decode a dataset into data/prepared/")
    p.add_argument("name")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("teacher", help="train or fine-tune a teacher declared in params.yaml")
    p.add_argument("name")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: $SLIMBENCH_DEVICE or cpu)")
    p.set_defaults(func=cmd_teacher)
    p = sub.add_parser("teachers", help="write results/TEACHERS.md from the teachers' metadata")
    p.set_defaults(func=cmd_teachers)
    p = sub.add_parser("check", help="validate params.yaml tiers (all by default); exit 2 on any problem")
    p.add_argument("--tier", default=None, help="only this tier")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # the named tier is checked (and, for run/compress, its budgets) before pytest or training starts
        status = checked_tier(args) or checked_budgets(args) or args.func(args)
    except SlimbenchError as exc:
        print(f"slimbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write outside fileio's guarded ones (theirs raise DiskFullError)
        if exc.errno != errno.ENOSPC:
            raise
        print(f"slimbench: error: no space left on device writing {exc.filename or 'a file'}; fix: free space "
              "on that filesystem and rerun (stores are atomic: nothing half-written was kept)", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
