"""Budgets a case cannot meet, found before anything trains.

Each case's input model is built the way ``harness.compress_case`` builds it (a fresh student, or
the teacher for ``model: reference``) and its method's ``Method.infeasible`` says whether the
budget is out of reach: the narrowest width of a compact architecture, the lowest ranks of a
low-rank factorization, the most channels structured pruning removes, a fixed student's own
size, or the bits a quantization method stores. Building a model and counting is cheap; nothing
is trained. ``from_case`` cases start from a model that does not exist yet and are not checked.
"""

from __future__ import annotations

import json

import torch

from . import harness
from .budgets import Budget
from .cases import Case
from .config import Paths, default_paths
from .datasets import DataSplits, load_splits
from .errors import SlimbenchError
from .methods import METHODS, Context, Method
from .training import Recipe

UPPER_BOUNDS = ("params", "bytes", "bits")


def budget_text(budget: Budget) -> str:
    """``params<=10``, ``sparsity>=0.9``, ``macs_speedup>=2``."""
    value = int(budget.value) if float(budget.value).is_integer() else budget.value
    return f"{budget.kind}{'<=' if budget.kind in UPPER_BOUNDS else '>='}{value}"


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
        method = METHODS.get(case.method)
        budget = Budget.from_config(case.budget)
        if case.from_case or budget.kind == "none" or type(method).infeasible is Method.infeasible:
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
            ctx = Context(data=data, teacher=reference, recipe=Recipe.from_dict(case.recipe),
                          settings={**method.settings, **case.settings}, build_model=build, seed=case.seed)
            reason = method.infeasible(given, budget, ctx)
        if reason:
            found[case.case_id] = f"case {case.case_id} cannot meet {budget_text(budget)}: {reason}"
    return found
