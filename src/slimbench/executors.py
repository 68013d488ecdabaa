"""Where `slimbench compress` runs its cases: ``--executor pool|local|slurm``.

``pool`` (the default) is ``jobs.run``: this process, or worker processes of it. ``local`` and
``slurm`` go through submitit, one job per case: ``local`` starts each job as a subprocess on this
machine (``LocalExecutor``), ``slurm`` submits it with ``sbatch`` (``SlurmExecutor``). A job runs
``jobs.compress_one`` as a pool worker would (same key, same seed, same weights), with this run's
project root, device and torch threads set inside it, and returns its ``JobResult``.

Waves (``jobs.waves``) are kept: a wave's jobs all finish before the next wave is submitted, so a
``from_case`` case finds its upstream model in the cache. ``--jobs N`` is the number of jobs running
at once: on Slurm each wave is one job array throttled to N (``%N``, submitit's
``array_parallelism``); ``LocalExecutor`` has no such limit, so this process submits a wave through a
sliding window of N jobs. Uncacheable cases are "skipped" here without a job.

Options (``--timeout-min``, ``--mem-gb``, ...; the names of Hydra's submitit launcher) default to
params.yaml's top-level ``executor:`` section (top level: no tier's config hash sees it); the
command line overrides them. Every value is checked before anything is submitted. ``local`` maps
only ``timeout_min`` (the job is killed after it): memory and CPU limits do not apply, and the jobs
see the GPUs this process sees (submitit's ``gpus_per_node`` would hide them at 0).

Threads: on the CPU every job uses the tier's ``threads`` (part of each model's key); on an
accelerator a job's host threads are its share of the cores: this machine's split by ``--jobs``
(local) or the job's ``cpus_per_task`` (slurm).

Logs (stdout and stderr of every job, with the case's progress lines) go to
``<jobs_folder>/<tier>/`` (default ``.slimbench-jobs``, git-ignored; not ``.slimbench-cache``, which
DVC tracks). A case whose job crashed, was killed or timed out is a failed ``JobResult`` with its
state; every failed case's detail names its stderr log. Ctrl-C cancels the submitted jobs; the
same command resumes the batch (finished cases are cache hits, the others resume from their last
finished epoch).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jobs
from .cases import Case, Tier
from .errors import ConfigError, SlimbenchError
from .jobs import JobResult

DEFAULTS: dict[str, Any] = {"timeout_min": 120, "mem_gb": 16, "cpus_per_task": 2, "gpus_per_node": 0,
                            "partition": None, "qos": None, "account": None, "constraint": None,
                            "jobs_folder": ".slimbench-jobs"}
SLURM_ONLY = ("partition", "qos", "account", "constraint")
POLL_S = {"local": 1.0, "slurm": 10.0}


def _whole(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


CHECKS = {  # key: (test, what it must be)
    "timeout_min": (_whole(1), "whole minutes >= 1"),
    "mem_gb": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number of GB > 0"),
    "cpus_per_task": (_whole(1), "a whole number >= 1"),
    "gpus_per_node": (_whole(0), "a whole number >= 0"),
    **{k: (lambda v: v is None or (isinstance(v, str) and v != ""), "a name or null") for k in SLURM_ONLY},
    "jobs_folder": (lambda v: isinstance(v, str) and v != "", "a folder path"),
}


@dataclass(frozen=True)
class Plan:
    """How one `compress` runs: the executor, its settings and what every job is given."""

    executor: str
    tier: str
    jobs: int
    on: str  # device type
    threads: int  # torch threads of each job
    key_threads: int  # the tier's threads, part of each model's key
    settings: dict[str, Any]
    folder: Path  # job logs
    env: dict[str, str | None] = field(default_factory=dict)  # set (None: unset) inside each job


def option(key: str) -> str:
    return "--" + key.replace("_", "-")


def configured(root: Path) -> dict[str, Any]:
    """params.yaml's ``executor:`` section over ``DEFAULTS``, checked."""
    from .config import load_params

    section = load_params(root).get("executor") or {}
    if not isinstance(section, dict):
        raise ConfigError("params.yaml executor: must be a mapping of option: value; "
                          f"fix: e.g. `executor: {{timeout_min: {DEFAULTS['timeout_min']}}}`")
    for key, value in section.items():
        if key not in DEFAULTS:
            raise ConfigError(f"params.yaml executor.{key}: unknown key; fix: use one of {', '.join(sorted(DEFAULTS))}")
        _check(key, value, f"params.yaml executor.{key}: {value!r}", "set it in params.yaml")
    return {**DEFAULTS, **section}


def _check(key: str, value: Any, where: str, how: str) -> None:
    test, want = CHECKS[key]
    if not test(value):
        raise ConfigError(f"{where} is not {want}; fix: {how} to {want}")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options on the command line, checked against ``--executor``."""
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    for key, value in given.items():
        if args.executor == "pool" or (args.executor == "local" and key in SLURM_ONLY):
            needs = "--executor slurm" if key in SLURM_ONLY else "--executor local or slurm"
            raise SlimbenchError(f"{option(key)} applies to {needs}, not --executor {args.executor}; "
                                 f"fix: add {needs.split(' or ')[0]} or drop {option(key)}")
        _check(key, value, f"{option(key)} {value}", "set it")
    return given


def plan(args: argparse.Namespace, tier: Tier) -> Plan:
    """Check the options and settle the device, threads and log folder of ``args``' run."""
    from .config import project_root
    from .training import device

    given = _given(args)
    if args.jobs < 1:
        raise SlimbenchError(f"--jobs {args.jobs}: fix: give a number of jobs at once >= 1")
    root = project_root()
    settings = {**configured(root), **given}
    name = os.environ.get("SLIMBENCH_DEVICE", "cpu")
    on = _device_type(name) if args.executor == "slurm" else device().type  # no GPU needed to submit
    if args.executor == "slurm" and on != "cpu" and settings["gpus_per_node"] < 1:
        raise SlimbenchError(f"--device {on} on Slurm with gpus_per_node 0: the jobs would see no GPU; "
                             "fix: --gpus-per-node 1 (or executor.gpus_per_node in params.yaml)")
    cores = settings["cpus_per_task"] if args.executor == "slurm" else None
    threads = jobs.threads_per_job(tier.threads, 1 if cores else args.jobs, on, cores)
    base = Path(args.jobs_folder).resolve() if args.jobs_folder else root / settings["jobs_folder"]
    env = {"SLIMBENCH_ROOT": str(root), "SLIMBENCH_DEVICE": name}
    if args.executor == "local":  # undo submitit's CUDA_VISIBLE_DEVICES
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return Plan(args.executor, tier.name, args.jobs, on, threads, tier.threads, settings, base / tier.name, env)


def _device_type(name: str) -> str:
    import torch

    try:
        return torch.device(name).type
    except RuntimeError:
        raise ConfigError(f"SLIMBENCH_DEVICE={name!r} is not a device; fix: use cpu or cuda") from None


def make_executor(plan: Plan):
    """submitit's executor for ``plan`` (an ``AutoExecutor``, as Hydra's launcher builds it)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=plan.folder, cluster=plan.executor)
    except RuntimeError:  # SlurmExecutor without srun
        raise SlimbenchError(f"--executor {plan.executor}: no `srun` on PATH, this is no Slurm machine; fix: run "
                             "on a Slurm login node or use --executor local") from None
    s = plan.settings
    executor.update_parameters(name=f"slimbench-{plan.tier}", timeout_min=s["timeout_min"])
    if plan.executor == "slurm":
        executor.update_parameters(mem_gb=s["mem_gb"], cpus_per_task=s["cpus_per_task"],
                                   gpus_per_node=s["gpus_per_node"] or None, slurm_array_parallelism=plan.jobs,
                                   **{f"slurm_{k}": s[k] for k in SLURM_ONLY if s[k] is not None})
    return executor


def compress_in_job(case: Case, key_threads: int, threads: int, env: dict[str, str | None]) -> JobResult:
    """The body of one job: ``env`` and the torch threads, then the case."""
    import torch

    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    torch.set_num_threads(threads)
    return jobs.compress_one(case, key_threads)


@dataclass
class Submitted:
    case: Case
    job: Any  # a submitit Job
    start: float
    state: str = ""


def run(plan: Plan, cases: list[Case], executor) -> list[JobResult]:
    """Compress ``cases`` as submitit jobs of ``executor``, wave by wave; results in the cases' order."""
    from .methods import METHODS

    done: dict[str, JobResult] = {}
    live: list[Submitted] = []
    try:
        for wave in jobs.waves(cases):
            for case in [c for c in wave if not METHODS.get(c.method).cacheable]:
                done[case.case_id] = jobs.compress_one(case, plan.key_threads)  # skipped, no job needed
                jobs.announce(done[case.case_id])
            _run_wave(executor, plan, [c for c in wave if c.case_id not in done], live, done)
    except KeyboardInterrupt:
        raise SlimbenchError(_cancel(plan, live, len(done), len(cases))) from None
    return [done[c.case_id] for c in cases]


def _run_wave(executor, plan: Plan, queue: list[Case], live: list[Submitted], done: dict[str, JobResult]) -> None:
    """Submit ``queue`` (at most ``plan.jobs`` running at once on local) and wait for all of it."""
    window = plan.jobs if plan.executor == "local" else len(queue)  # Slurm: the array's %N throttles
    while queue or live:
        free = window - len(live)
        if queue and free > 0:
            live += _submit(executor, plan, queue[:free])
            del queue[:free]
        time.sleep(POLL_S[plan.executor])
        for sub in [s for s in live if _finished(s)]:
            live.remove(sub)
            done[sub.case.case_id] = _outcome(sub)
            jobs.announce(done[sub.case.case_id])


def _submit(executor, plan: Plan, cases: list[Case]) -> list[Submitted]:
    with executor.batch():  # Slurm: one job array
        submitted = [executor.submit(compress_in_job, c, plan.key_threads, plan.threads, plan.env) for c in cases]
    start = time.perf_counter()
    return [Submitted(c, job, start) for c, job in zip(cases, submitted)]


def _finished(sub: Submitted) -> bool:
    """Print the job's state when it changed; whether it has ended."""
    state = sub.job.state
    if state != sub.state:
        sub.state = state
        print(f"[{sub.case.case_id}] job {sub.job.job_id}: {state}", flush=True)
    return sub.job.done()


def _outcome(sub: Submitted) -> JobResult:
    """The job's JobResult; a crashed, killed or timed-out job is a failed one with its state."""
    sub.job.get_info(mode="force")  # the final state (Slurm: sacct now)
    sub.state = sub.job.state
    try:
        result = sub.job.result()
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError
        result = JobResult(sub.case.case_id, "failed", time.perf_counter() - sub.start, detail=_why(exc, sub.state))
    result.job_id, result.job_state = sub.job.job_id, sub.state
    if result.status == "failed":
        result.detail += f"; log: {sub.job.paths.stderr}"
    return result


def _why(exc: Exception, state: str) -> str:
    from submitit.core.utils import FailedJobError

    if isinstance(exc, FailedJobError):  # its message holds the traceback between two dashed lines
        parts = str(exc).split("-" * 22)
        lines = parts[1].strip().splitlines() if len(parts) > 2 else []
        return f"job crashed: {lines[-1] if lines else exc}"
    return f"job ended without a result (state {state}: killed, out of memory or past its timeout_min?)"


def _cancel(plan: Plan, live: list[Submitted], finished: int, total: int) -> str:
    """Cancel the running jobs; the one-line message of the interruption."""
    for sub in live:
        try:
            sub.job.cancel(check=False)
        except Exception as exc:  # noqa: BLE001 - scancel missing or refusing: say so and go on
            print(f"slimbench: could not cancel job {sub.job.job_id}: {exc}", file=sys.stderr)
    ids = ", ".join(s.job.job_id for s in live) or "none running"
    return (f"interrupted after {finished} of {total} case(s); cancelled {len(live)} {plan.executor} job(s) "
            f"({ids}); fix: run the same command again: finished cases are cached, the others resume from "
            "their last finished epoch")


def compress(plan: Plan, cases: list[Case], summary_json: str | None) -> int:
    """Run ``cases`` on ``plan``'s executor, print the outcome table; 1 if a case failed."""
    if plan.executor != "slurm" and plan.on == "cpu" and plan.jobs * plan.threads > jobs.usable_cores():
        print(f"slimbench: note: {plan.jobs} jobs x {plan.threads} threads (the tier's, part of each model's key) "
              f"> {jobs.usable_cores()} cores; they will share them", file=sys.stderr)
    executor = None if plan.executor == "pool" else make_executor(plan)
    how = "" if plan.executor == "pool" else f", {plan.executor} jobs (logs in {plan.folder})"
    print(f"compressing {len(cases)} case(s) of tier {plan.tier} on {plan.on}: {plan.jobs} job(s) x "
          f"{plan.threads} thread(s){how}", flush=True)
    start = time.perf_counter()
    if plan.executor == "pool":
        import torch

        torch.set_num_threads(plan.threads)  # jobs 1 compresses here; on the CPU threads are part of the key
        results = jobs.run(cases, plan.jobs, plan.env["SLIMBENCH_DEVICE"], plan.threads, key_threads=plan.key_threads)
    else:
        results = run(plan, cases, executor)
    wall = time.perf_counter() - start
    print(jobs.summary(results, wall), flush=True)
    if summary_json:
        elsewhere = {"trained_on": f"slurm jobs ({plan.on})"} if plan.executor == "slurm" else {}
        jobs.write_summary(Path(summary_json), results, wall, tier=plan.tier, jobs=plan.jobs, threads=plan.threads,
                           executor=plan.executor, **elsewhere)
    failed = [r.case_id for r in results if r.status == "failed"]
    if failed:
        print(f"slimbench: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
