"""Many cases at once: ``slimbench compress --jobs N`` runs a tier's cases in N worker processes.
(``--executor local|slurm`` makes each case a submitit job instead: executors.py.)

Each worker takes the next case from a queue and compresses it into the case cache exactly as a
sequential run would (same key, same seed, same weights), printing its progress lines with the
case id in front. Cases that start from another case's model (``from_case``) run in a later
wave than that case, so no model is made twice at once. An interrupted batch is resumed by
running the same command again: finished cases are cache hits, unfinished ones resume from
their per-epoch training state.

Threads: on the CPU the thread count is part of a model's identity (its cache key), so every
job uses the tier's ``threads``; pick N <= cores / threads. On an accelerator the host threads
only feed the device: each job gets its share of the cores (at most the tier's ``threads``),
and the models are keyed with the tier's count, so a CPU run finds them.
"""

from __future__ import annotations

import io
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import active_children, get_context
from typing import TextIO

from .cases import Case
from .errors import SlimbenchError


@dataclass
class JobResult:
    case_id: str
    status: str  # trained | cached | skipped | failed
    seconds: float
    top1: float | None = None
    detail: str = ""
    job_id: str | None = None  # the submitit job (``--executor local|slurm``, see executors.py)
    job_state: str | None = None  # its final state


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(tier_threads: int, jobs: int, device_type: str, cores: int | None = None) -> int:
    """The host threads of one job (see the module docstring)."""
    if device_type == "cpu":
        return tier_threads
    return max(1, min(tier_threads, (cores or usable_cores()) // jobs))


def waves(cases: list[Case]) -> list[list[Case]]:
    """The cases in dependency order: a case comes one wave after the batch's case it starts from."""
    ids = {c.case_id for c in cases}

    def depth(case: Case) -> int:
        up = case.upstream
        return 0 if up is None or up.case_id not in ids else 1 + depth(up)

    depths = {c.case_id: depth(c) for c in cases}
    return [[c for c in cases if depths[c.case_id] == d] for d in range(max(depths.values(), default=-1) + 1)]


class PrefixedLines(io.TextIOBase):
    """A text stream that writes every line to ``target`` with ``prefix`` in front."""

    def __init__(self, target: TextIO, prefix: str) -> None:
        self.target, self.prefix, self.pending = target, prefix, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.target.write(f"{self.prefix}{line}\n")
        self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def compress_one(case: Case, key_threads: int | None) -> JobResult:
    """Compress one case into the cache; a SlimbenchError is the case's failure, not the batch's."""
    from . import harness
    from .methods import METHODS

    start = time.perf_counter()
    if not METHODS.get(case.method).cacheable:
        return JobResult(case.case_id, "skipped", 0.0, detail=f"{case.method} results are not cacheable; "
                                                               "`slimbench run` makes them")
    try:
        outcome = harness.compress_case(case, key_threads=key_threads)
    except SlimbenchError as exc:
        return JobResult(case.case_id, "failed", time.perf_counter() - start, detail=str(exc))
    q = outcome.quality
    return JobResult(case.case_id, "cached" if outcome.cache_hit else "trained", time.perf_counter() - start,
                     q["top1"], f"val {q['val_top1']:.2f}%, {q['train_seconds']} s on {q.get('trained_on')}")


def _init_worker(device: str | None, threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (``run``)
    if device:
        os.environ["SLIMBENCH_DEVICE"] = device
    torch.set_num_threads(threads)


def _work(case: Case, key_threads: int | None) -> JobResult:
    """One case in a worker: its output lines carry the case id."""
    streams = sys.stdout, sys.stderr
    sys.stdout = PrefixedLines(streams[0], f"[{case.case_id}] ")
    sys.stderr = PrefixedLines(streams[1], f"[{case.case_id}] ")
    try:
        return compress_one(case, key_threads)
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = streams


def announce(result: JobResult) -> None:
    if result.status == "failed":
        print(f"{result.case_id}: FAILED: {result.detail}", file=sys.stderr, flush=True)
    elif result.status == "skipped":
        print(f"{result.case_id}: skipped ({result.detail})", flush=True)
    else:
        print(f"{result.case_id}: top-1 {result.top1:.2f}% ({result.detail})"
              f"{' [cached]' if result.status == 'cached' else ''}", flush=True)


def run(cases: list[Case], jobs: int, device: str | None, threads: int, key_threads: int | None) -> list[JobResult]:
    """Compress ``cases``: in this process when ``jobs`` is 1, else in ``jobs`` worker processes
    (spawned: CUDA cannot be forked), wave by wave. Results come back in the cases' order."""
    if jobs < 1:
        raise SlimbenchError(f"--jobs {jobs}: fix: give a number of worker processes >= 1")
    results: dict[str, JobResult] = {}
    if jobs == 1:
        for case in cases:
            results[case.case_id] = compress_one(case, key_threads)
            announce(results[case.case_id])
        return [results[c.case_id] for c in cases]
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(device, threads))
    try:
        for wave in waves(cases):
            pending: set[Future] = {pool.submit(_work, case, key_threads) for case in wave}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    results[result.case_id] = result
                    announce(result)
    except KeyboardInterrupt:  # stop now: queued cases are dropped, running ones killed mid-epoch
        pool.shutdown(wait=False, cancel_futures=True)
        for child in active_children():
            child.terminate()
        raise SlimbenchError(f"interrupted after {len(results)} of {len(cases)} case(s); fix: run the same "
                             "command again: finished cases are cached, the others resume from their last "
                             "finished epoch") from None
    pool.shutdown()
    return [results[c.case_id] for c in cases]


def summary(results: list[JobResult], seconds: float) -> str:
    """The end-of-batch table: every case's outcome (and submitit job, if any), then the counts and
    the wall time."""
    from tabulate import tabulate

    submitted = any(r.job_id for r in results)
    rows = [(r.case_id, r.status, "" if r.top1 is None else f"{r.top1:.2f}", f"{r.seconds:.0f}",
             *((r.job_id or "", r.job_state or "") if submitted else ()),
             r.detail if r.status in ("failed", "skipped") else "") for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("trained", "cached", "skipped", "failed")}
    tail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    headers = ["case", "status", "top-1 %", "s", *(("job", "state") if submitted else ()), "detail"]
    return (tabulate(rows, headers=headers, tablefmt="simple")
            + f"\n{len(results)} case(s): {tail}; {seconds:.0f} s wall")


def write_summary(path, results: list[JobResult], wall: float, **facts) -> None:
    """The batch as JSON: the machine (device, torch, commit), the wall time and every case's outcome
    (``trained_on`` in ``facts`` replaces this machine's device, e.g. for Slurm jobs)."""
    import torch

    from .config import project_root
    from .environment import fingerprint
    from .fileio import write_json
    from .training import trained_on

    env = fingerprint(project_root())
    on = facts.pop("trained_on", None) or trained_on()
    write_json(path, {"trained_on": on, "torch": torch.__version__, "cpu_cores": usable_cores(),
                      "commit": env["commit"], "dirty": env["dirty"], **facts, "wall_seconds": round(wall, 1),
                      "cases": [vars(r) for r in results]})
