"""Issue 16's targets across runtimes, paired in one process (the harness pairs a case with its
reference under the *same* runtime; these targets compare different runtimes).

Every candidate (a model under a runtime) is timed in round-robin turns, the order rotated every
round, one median-of-``calls`` turn per candidate per round; a 1024 x 1024 ``torch.mm`` turn in
every round gives the GEMM rate of the same moment. Ratios are medians over rounds with a paired
bootstrap 95% interval (``stats.bootstrap_ratio_ci``). Models come from the standard tier's R1
cases (cached, or made now: calibration only, no training).

    python benchmarks/runtime_targets.py [--rounds 30] [--out results/runtime_targets.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from slimbench import harness, runtimes, stats
from slimbench.cases import expand_cases
from slimbench.environment import fingerprint
from slimbench.fileio import write_json, write_text
from slimbench.metrics import count_macs

FLOAT_RUNTIMES = ("eager", "inductor", "onnxruntime", "openvino")
INT8 = {"quant_ptq_int8": "eager", "quant_pt2e_int8": "inductor", "quant_ort_int8": "eager",  # eager = its own runtime
        "quant_ov_int8": "eager"}


def outcome(case_id: str):
    cases = {c.case_id: c for c in expand_cases("standard")}
    return harness.compress_case(cases[case_id])


def candidates(batch: int) -> dict[str, tuple]:
    """name -> (forward, example, MACs per image): the R1 models under their runtimes."""
    found = {}
    for arch, tag in (("resnet20", "rt"), ("resnet56", "rt-resnet56")):
        dense = outcome(f"reference-cifar10_jpeg-nobudget-{tag}")
        x = harness.example_input(dense.data, batch)
        macs = count_macs(dense.model, x[:1])
        for rt in FLOAT_RUNTIMES:
            found[f"{arch} float32 {rt}"] = (runtimes.prepare_timed(rt, dense.model, [x])[0], x, macs)
        if arch == "resnet20":
            for method, rt in INT8.items():
                model = outcome(f"{method}-cifar10_jpeg-bits8-{tag}").model
                found[f"{arch} {method} {'own' if rt == 'eager' else rt}"] = (
                    runtimes.prepare_timed(rt, model, [x])[0], x, macs)
        else:
            pruned = outcome("prune_structured-cifar10_jpeg-macs2x-rt-resnet56-oneshot").model
            for rt in FLOAT_RUNTIMES:
                found[f"{arch} structured-2x {rt}"] = (runtimes.prepare_timed(rt, pruned, [x])[0], x,
                                                      count_macs(pruned, x[:1]))
    return found


def rounds_of(found: dict[str, tuple], rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of every candidate (and the GEMM turn), one median per round."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    turns = {**{name: (fwd, x) for name, (fwd, x, _) in found.items()}, "gemm": (lambda _: torch.mm(a, b), None)}
    names, times = list(turns), {name: [] for name in turns}
    for r in range(rounds + 2):  # two warm-up rounds
        for name in names[r % len(names):] + names[:r % len(names)]:
            fwd, x = turns[name]
            once = []
            for _ in range(calls):
                start = time.perf_counter()
                fwd(x)
                once.append(time.perf_counter() - start)
            if r >= 2:
                times[name].append(statistics.median(once))
    return times


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> dict:
    low, high = stats.bootstrap_ratio_ci(times[slow], times[fast])
    return {"of": f"{slow} / {fast}", "ratio": round(statistics.median(times[slow]) / statistics.median(times[fast]), 3),
            "ci95": [round(low, 3), round(high, 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5,
                        help="calls per turn at batch 1 (2 at batch 64); their median is the turn's time")
    parser.add_argument("--out", default="results/runtime_targets.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    blocks = {}
    for batch in (1, 64):
        found = candidates(batch)
        times = rounds_of(found, args.rounds, args.calls if batch == 1 else 2)
        gemm = 2 * 1024 ** 3 / statistics.median(times.pop("gemm")) / 1e9
        table = {name: {"median_ms": round(1e3 * statistics.median(t), 3), "iqr_ms": round(1e3 * stats.median_iqr(t)[1], 3),
                        "gflops": round(2 * found[name][2] * batch / statistics.median(t) / 1e9, 1)}
                 for name, t in times.items()}
        for row in table.values():
            row["gemm_fraction"] = round(row["gflops"] / gemm, 3)
        best20 = min((n for n in table if n.startswith("resnet20 float32")), key=lambda n: table[n]["median_ms"])
        best8 = min((n for n in table if n.startswith("resnet20 quant")), key=lambda n: table[n]["median_ms"])
        best56 = min((n for n in table if n.startswith("resnet56 float32")), key=lambda n: table[n]["median_ms"])
        runtime56 = best56.rsplit(" ", 1)[1]
        blocks[f"batch {batch}"] = {
            "gemm_gflops_same_rounds": round(gemm, 1), "candidates": table,
            "ratios": [ratio(times, "resnet20 float32 eager", best8), ratio(times, best20, best8),
                       ratio(times, best56, f"resnet56 structured-2x {runtime56}")]}
        print(f"batch {batch}: GEMM {gemm:.1f} GFLOP/s; " + "; ".join(
            f"{r['of']} = {r['ratio']} {r['ci95']}" for r in blocks[f"batch {batch}"]["ratios"]), flush=True)
    env = fingerprint(Path.cwd())
    write_json(Path(args.out), {"rounds": args.rounds, "calls": args.calls, "threads": 2, "cpu": env["cpu"],
                                "commit": env["commit"], "dirty": env["dirty"], **blocks})
    write_text(Path(args.out).with_suffix(".md"), render(blocks, env))
    print(f"written {args.out} and {Path(args.out).with_suffix('.md')}")


def render(blocks: dict, env: dict) -> str:
    from tabulate import tabulate

    lines = [f"# Runtime targets, paired in one process ({env['cpu']}, 2 threads, commit `{env['commit'][:10]}`)", "",
             "Generated by `python benchmarks/runtime_targets.py`; medians over rounds, ± IQR; GFLOP/s = 2 x MACs x "
             "batch / median; GEMM = a 1024 x 1024 `torch.mm` timed in the same rounds.", ""]
    for name, block in blocks.items():
        rows = [(n, r["median_ms"], r["iqr_ms"], r["gflops"], r["gemm_fraction"]) for n, r in block["candidates"].items()]
        lines += [f"## {name} (GEMM {block['gemm_gflops_same_rounds']} GFLOP/s)", "",
                  tabulate(rows, headers=["model, runtime", "median (ms)", "IQR (ms)", "GFLOP/s", "x GEMM"],
                           tablefmt="github"), "",
                  *[f"- {r['of']}: **{r['ratio']}x** [{r['ci95'][0]}, {r['ci95'][1]}]" for r in block["ratios"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
