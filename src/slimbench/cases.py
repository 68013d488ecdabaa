"""Tiers and their cases, expanded from params.yaml into one Case per (method, dataset, budget)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .budgets import Budget
from .config import Paths, default_paths, load_params
from .datasets import DATASETS
from .errors import ConfigError
from .methods import METHODS

TIER_DEFAULTS = {"threads": 2, "batch_size": 64, "latency_rounds": 30, "latency_warmup": 5}
CASE_KEYS = {"method", "datasets", "model", "model_kwargs", "budgets", "budget", "settings", "recipe",
             "seeds", "tag", "study", "teacher", "from_case"}
# Case fields that label a case without changing the model it produces (left out of the cache key).
LABELS = ("tier", "study", "group_id", "tag")
# Fields added after models were cached: left out of the key while unset, so those keys still hold.
UNSET_OMITTED = ("from_case",)


@dataclass(frozen=True)
class Tier:
    name: str
    threads: int
    batch_size: int  # batch of the second latency measurement
    latency_rounds: int
    latency_warmup: int
    datasets: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``model`` is "reference" (the dataset's reference/teacher model) or a
    registered architecture built fresh (a student)."""

    case_id: str
    tier: str
    method: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    budget: dict[str, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    subset: dict[str, int] | None = None
    seed: int = 0
    study: str | None = None  # the study a case belongs to; its seeds are summarised together
    tag: str | None = None  # the entry's `tag` (already part of case_id)
    from_case: str | None = None  # id of the case (same tier) whose compressed model this one starts from
    group_id: str = ""  # case_id without the -seedN suffix: the rows one summary row averages

    @property
    def family(self) -> str:
        return METHODS.get(self.method).family

    def config_hash(self) -> str:
        """Identifies everything that determines the compressed model (not the tier name)."""
        cfg = {k: v for k, v in asdict(self).items()
               if k not in LABELS and not (k in UNSET_OMITTED and v is None)}
        return hashlib.md5(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def tier_names(paths: Paths | None = None) -> list[str]:
    return sorted(load_params((paths or default_paths()).root).get("tiers", {}))


def load_tier(name: str, paths: Paths | None = None) -> Tier:
    tiers = load_params((paths or default_paths()).root).get("tiers", {})
    if name not in tiers:
        raise ConfigError(f"unknown tier {name!r}; valid tiers: {', '.join(sorted(tiers))}")
    cfg = tiers[name]
    settings = {**TIER_DEFAULTS, **{k: v for k, v in cfg.items() if k in TIER_DEFAULTS}}
    datasets = cfg.get("datasets") or {}
    for ds in datasets:
        DATASETS.get(ds)
    return Tier(name, datasets=datasets, **settings)


def expand_cases(tier_name: str, paths: Paths | None = None) -> list[Case]:
    """Every case of a tier; ids are unique within the tier or this raises."""
    paths = paths or default_paths()
    tier = load_tier(tier_name, paths)
    entries = load_params(paths.root)["tiers"][tier_name].get("cases") or []
    cases: list[Case] = []
    for i, entry in enumerate(entries):
        cases += _expand_entry(tier, entry, where=f"tiers.{tier_name}.cases[{i}]")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ConfigError(f"duplicate case id {case.case_id!r} in tier {tier_name}; fix: add a distinct `tag`")
        seen.add(case.case_id)
        if getattr(METHODS.get(case.method), "upstream_family", None) and not case.from_case:
            raise ConfigError(f"case {case.case_id}: method {case.method} starts from another case's model; "
                              "fix: set `from_case:` to a case id of this tier")
    return [_chain(case, {c.case_id: c for c in cases}) if case.from_case else case for case in cases]


def _chain(case: Case, by_id: dict[str, Case]) -> Case:
    """Check a ``from_case`` link (exists, same dataset, no loop) and take the upstream's model and teacher."""
    upstream, seen = by_id.get(case.from_case), {case.case_id}
    if upstream is None:
        raise ConfigError(f"case {case.case_id}: from_case {case.from_case!r} is not a case of tier {case.tier}; "
                          f"fix: see `slimbench list cases --tier {case.tier}`")
    if upstream.dataset != case.dataset:
        raise ConfigError(f"case {case.case_id}: from_case {upstream.case_id} is on {upstream.dataset}, "
                          f"not {case.dataset}; fix: restrict the case with `datasets: [{upstream.dataset}]`")
    needed = getattr(METHODS.get(case.method), "upstream_family", None)
    if needed and upstream.family != needed:
        raise ConfigError(f"case {case.case_id}: method {case.method} starts from a {needed} case, but "
                          f"{upstream.case_id} is {upstream.family}; fix: point `from_case:` at a {needed} case")
    link = upstream
    while link is not None and link.from_case:
        if link.case_id in seen:
            raise ConfigError(f"case {case.case_id}: from_case links loop through {link.case_id}; fix: break the loop")
        seen.add(link.case_id)
        link = by_id.get(link.from_case)
    return replace(case, model=upstream.model, model_kwargs=upstream.model_kwargs, teacher=upstream.teacher)


def _expand_entry(tier: Tier, entry: dict, where: str) -> list[Case]:
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(f"{where} must be a mapping with at least `method:`")
    unknown = set(entry) - CASE_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; valid: {sorted(CASE_KEYS)}")
    METHODS.get(entry["method"])
    budgets = entry.get("budgets") or [entry.get("budget")]
    cases = []
    for dataset in entry.get("datasets") or list(tier.datasets):
        if dataset not in tier.datasets:
            raise ConfigError(f"{where}: dataset {dataset!r} is not declared in tier {tier.name}'s datasets "
                              f"({', '.join(tier.datasets)})")
        ds_cfg = tier.datasets[dataset] or {}
        for budget_cfg in budgets:
            for seed in entry.get("seeds") or [0]:
                budget = Budget.from_config(budget_cfg)
                group = "-".join([entry["method"], dataset, budget.label] + ([entry["tag"]] if entry.get("tag") else []))
                suffix = f"-seed{seed}" if len(entry.get("seeds") or [0]) > 1 else ""
                cases.append(Case(
                    case_id=group + suffix, tier=tier.name, method=entry["method"], dataset=dataset,
                    model=entry.get("model", "reference"),
                    model_kwargs=entry.get("model_kwargs", {}),
                    teacher=entry.get("teacher", ds_cfg.get("teacher")), budget=budget_cfg,
                    settings=entry.get("settings", {}),
                    recipe={**ds_cfg.get("recipe", {}), **entry.get("recipe", {})},
                    subset=ds_cfg.get("subset"), seed=seed, study=entry.get("study"), group_id=group,
                    tag=entry.get("tag"), from_case=entry.get("from_case")))
    return cases


def select(cases: list[Case], pattern: str | None) -> list[Case]:
    """Cases whose id matches a shell-style pattern (all when pattern is None)."""
    return cases if not pattern else [c for c in cases if fnmatch.fnmatch(c.case_id, pattern)]


def shard(cases: list[Case], spec: str | None) -> list[Case]:
    """The cases of shard ``i/n`` (1-based): assigned by a hash of the case id, so a case keeps its
    shard whatever else the tier holds, and every case is in exactly one shard."""
    if not spec:
        return cases
    return [c for c in cases if in_shard(c.case_id, spec)]


def in_shard(case_id: str, spec: str) -> bool:
    """Whether ``case_id`` belongs to shard ``i/n``."""
    try:
        index, count = (int(part) for part in spec.split("/"))
        if not 1 <= index <= count:
            raise ValueError
    except ValueError:
        raise ConfigError(f"shard {spec!r} is not i/n with 1 <= i <= n; fix: e.g. --shard 2/4") from None
    return int(hashlib.md5(case_id.encode()).hexdigest(), 16) % count == index - 1
