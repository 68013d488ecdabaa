"""Budgets a case cannot meet, found before anything trains.

Each case's input model is built the way ``harness.compress_case`` builds it (a fresh student, or
the teacher for ``model: reference``) and checked here against what its method declares (a fixed
student's own size, ``Method.keeps_architecture``; the bits a quantization method stores,
``Method.stored_bits``), then by the method's own ``Method.infeasible`` where it sizes a model to
the budget: the narrowest width of a compact architecture, the lowest ranks of a low-rank
factorization, the most channels structured pruning removes. Building a model and counting is
cheap; nothing is trained. ``from_case`` cases start from a model that does not exist yet and are
not checked. The declared checks live here, not in methods/base.py, so that the methods that do
not measure import no measuring code (metrics.py), and their cache keys do not follow it.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from . import harness
from .budgets import Budget
from .cases import Case
from .config import Paths, default_paths
from .datasets import DataSplits, load_splits
from .errors import SlimbenchError
from .methods import METHODS, Context, Method
from .metrics import count_stored_params

UPPER_BOUNDS = ("params", "bytes", "bits")


def budget_text(budget: Budget) -> str:
    """``params<=10``, ``sparsity>=0.9``, ``macs_speedup>=2``."""
    value = int(budget.value) if float(budget.value).is_integer() else budget.value
    return f"{budget.kind}{'<=' if budget.kind in UPPER_BOUNDS else '>='}{value}"


def params_over_budget(given: nn.Module, budget: Budget) -> str | None:
    """A params budget that a method keeping ``given``'s architecture (a fixed student) cannot meet."""
    params = count_stored_params(given)
    if budget.kind == "params" and params > budget.value:
        return f"the model it trains keeps its architecture, which has {params:,} params"
    return None


def storage_over_budget(name: str, given: nn.Module, budget: Budget, bits: int) -> str | None:
    """A bits budget below the ``bits`` a quantization method stores its weights in, or a bytes
    budget below what ``given``'s conv/linear weights take at ``bits`` (a lower bound of the file)."""
    if budget.kind == "bits" and budget.value < bits:
        return f"{name} stores {bits}-bit weights"
    if budget.kind == "bytes":
        weights = sum(m.weight.numel() for m in given.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        if weights * bits // 8 > budget.value:
            return f"its {weights:,} conv/linear weights alone take {weights * bits // 8:,} bytes at {bits} bits"
    return None


def declared_infeasible(method: Method, given: nn.Module, budget: Budget) -> str | None:
    """What the method's declarations rule out: a params budget below a fixed student's size
    (``keeps_architecture``), a bits or bytes budget below its stored bits (``stored_bits``)."""
    if method.keeps_architecture and (reason := params_over_budget(given, budget)):
        return reason
    return None if method.stored_bits is None else storage_over_budget(method.name, given, budget, method.stored_bits)


def checked(method: Method) -> bool:
    """Whether feasibility has anything to check for ``method``."""
    return method.keeps_architecture or method.stored_bits is not None or type(method).infeasible is not Method.infeasible


def infeasible_cases(cases: list[Case], paths: Paths | None = None) -> dict[str, str]:
    """{case_id: reason} for the cases whose budget cannot be met, e.g. ``"case X cannot meet
    params<=10: the smallest width (0.05) has 1,234 params"``.

    A case whose input cannot be built here (a missing teacher checkpoint, data that is not
    prepared) is left to the harness, which reports it when the case runs.
    """
    paths = paths or default_paths()
    splits: dict[str, DataSplits] = {}
    teachers: dict[str, tuple] = {}
    found: dict[str, str] = {}
    for case in cases:
        method, budget = METHODS.get(case.method), case.budget
        if case.from_case or budget.kind == "none" or not checked(method):
            continue
        with torch.random.fork_rng():  # building models must not move the global generator
            try:
                key = json.dumps([case.dataset, case.subset], sort_keys=True)
                if key not in splits:
                    splits[key] = load_splits(case.dataset, {"subset": case.subset}, paths)
                data = splits[key]
                reference, meta = None, {}
                if case.model == "reference":
                    if case.teacher not in teachers:
                        teachers[case.teacher] = harness.case_reference(case, paths)
                    reference, meta = teachers[case.teacher]
                build = harness.case_builder(case, data, meta)
                given = reference if case.model == "reference" else build()
            except SlimbenchError:
                continue
            ctx = Context(data=data, teacher=reference, recipe=case.training_recipe,
                          settings={**method.settings, **case.settings}, build_model=build, seed=case.seed)
            reason = declared_infeasible(method, given, budget) or method.infeasible(given, budget, ctx)
        if reason:
            found[case.case_id] = f"case {case.case_id} cannot meet {budget_text(budget)}: {reason}"
    return found
