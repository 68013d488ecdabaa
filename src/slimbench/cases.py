"""Tiers and their cases, expanded from params.yaml into one Case per (method, dataset, budget)."""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from .budgets import Budget
from .config import Paths, default_paths, load_params
from .datasets import DATASETS
from .errors import ConfigError, SlimbenchError
from .methods import METHODS
from .training import RECIPE_CHOICES, Recipe

TIER_DEFAULTS = {"threads": 2, "batch_size": 64, "latency_rounds": 30, "latency_warmup": 5}
CASE_KEYS = {"method", "datasets", "model", "model_kwargs", "budgets", "budget", "settings", "recipe",
             "seeds", "tag", "study", "teacher", "from_case", "runtimes"}
# Deployment runtimes a case is timed under (runtimes.py holds them; names here so that config
# checks import no runtime code). Default: eager only, today's cost.
RUNTIME_NAMES = ("eager", "inductor", "onnxruntime", "openvino")
DEFAULT_RUNTIMES = ("eager",)
# Case fields that label a case without changing the model it produces (left out of the cache key);
# ``runtimes`` only says how the model is timed.
LABELS = ("tier", "study", "group_id", "tag", "runtimes")
# Fields resolved from others (the upstream case: its model's cache key is part of this case's key).
RESOLVED = ("upstream",)
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
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES  # every case's, unless the case lists its own


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``model`` is "reference" (the dataset's reference/teacher model) or a
    registered architecture built fresh (a student).

    The params.yaml values are kept as written (``budget_config``, ``recipe``, ``settings``: they
    make ``config_hash``); ``budget`` and ``training_recipe`` are them parsed, once per case, and
    ``upstream`` is the resolved ``from_case`` case (set by ``expand_cases``)."""

    case_id: str
    tier: str
    method: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    budget_config: dict[str, float] | None = None  # as in params.yaml, e.g. {params: 100000}
    settings: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    subset: dict[str, int] | None = None
    seed: int = 0
    study: str | None = None  # the study a case belongs to; its seeds are summarised together
    tag: str | None = None  # the entry's `tag` (already part of case_id)
    from_case: str | None = None  # id of the case (same tier) whose compressed model this one starts from
    group_id: str = ""  # case_id without the -seedN suffix: the rows one summary row averages
    runtimes: tuple[str, ...] | None = None  # the case's own `runtimes:` (None: the tier's)
    upstream: Case | None = field(default=None, repr=False)  # the from_case case, resolved

    @property
    def family(self) -> str:
        return METHODS.get(self.method).family

    @cached_property
    def budget(self) -> Budget:
        """``budget_config`` parsed (no budget: kind "none")."""
        return Budget.from_config(self.budget_config)

    @cached_property
    def training_recipe(self) -> Recipe:
        """The ``training.Recipe`` the case trains with: ``recipe`` over Recipe's defaults, the case's seed."""
        return replace(Recipe.from_dict(self.recipe), seed=self.seed)

    def config_hash(self) -> str:
        """Identifies everything that determines the compressed model (not the tier name): the
        params.yaml values, the budget as written under its params.yaml key ``budget``."""
        cfg = {"budget" if f.name == "budget_config" else f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in LABELS + RESOLVED and not (f.name in UNSET_OMITTED and getattr(self, f.name) is None)}
        return hashlib.md5(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def tier_names(paths: Paths | None = None) -> list[str]:
    return sorted(load_params((paths or default_paths()).root).get("tiers", {}))


def load_tier(name: str, paths: Paths | None = None) -> Tier:
    tiers = load_params((paths or default_paths()).root).get("tiers", {})
    if name not in tiers:
        raise ConfigError(f"unknown tier {name!r}; valid tiers: {', '.join(sorted(tiers))}")
    cfg = tiers[name]
    problems = _tier_settings_problems(name, cfg, load_params((paths or default_paths()).root))
    if problems:  # a typo must not be dropped silently (`thread:`, a dataset's `subest:`)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}; see `slimbench check --tier {name}`")
    settings = {**TIER_DEFAULTS, **{k: v for k, v in cfg.items() if k in TIER_DEFAULTS}}
    datasets = cfg.get("datasets") or {}
    for ds in datasets:
        DATASETS.get(ds)
    return Tier(name, datasets=datasets, runtimes=tuple(cfg.get("runtimes") or DEFAULT_RUNTIMES), **settings)


def case_runtimes(case: Case, tier: Tier) -> tuple[str, ...]:
    """The runtimes a case is timed under: its own `runtimes:`, else its tier's."""
    return case.runtimes or tier.runtimes


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
    """Check a ``from_case`` link (exists, same dataset, no loop), take the upstream's model and
    teacher, and attach the upstream case (itself chained when it has a ``from_case``)."""
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
    if upstream.from_case:
        upstream = _chain(upstream, by_id)
    return replace(case, model=upstream.model, model_kwargs=upstream.model_kwargs, teacher=upstream.teacher,
                   upstream=upstream)


def _expand_entry(tier: Tier, entry: dict, where: str) -> list[Case]:
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(f"{where} must be a mapping with at least `method:`")
    unknown = set(entry) - CASE_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; valid: {sorted(CASE_KEYS)}")
    METHODS.get(entry["method"])
    if "runtimes" in entry and (problems := runtime_problems(f"{where}.runtimes", entry["runtimes"])):
        raise ConfigError(problems[0])
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
                    teacher=entry.get("teacher", ds_cfg.get("teacher")), budget_config=budget_cfg,
                    settings=entry.get("settings", {}),
                    recipe={**ds_cfg.get("recipe", {}), **entry.get("recipe", {})},
                    subset=ds_cfg.get("subset"), seed=seed, study=entry.get("study"), group_id=group,
                    tag=entry.get("tag"), from_case=entry.get("from_case"),
                    runtimes=tuple(entry["runtimes"]) if entry.get("runtimes") else None))
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


# ---------------------------------------------------------------------------------------------
# Validation: every problem of a tier as one line (where; what; fix), found before anything trains.

TIER_KEYS = (*TIER_DEFAULTS, "runtimes", "datasets", "cases")
TIER_MINIMUM = {"threads": 1, "batch_size": 1, "latency_rounds": 1, "latency_warmup": 0}
DATASET_KEYS = ("teacher", "subset", "recipe")
SUBSET_KEYS = ("train", "val", "test")
BUDGET_EXAMPLE = "budget: {params: 100000}, {sparsity: 0.9}, {bytes: 300000}, {bits: 8} or {macs_speedup: 2}"
# Values training.py accepts (training.RECIPE_CHOICES): a typo would fail mid-training.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fix_for(word: str, valid: list[str] | tuple[str, ...]) -> str:
    """'fix: did you mean 'x'? valid: a, b' (difflib's closest valid name, when one is close)."""
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else "remove or rename it; "
    return f"fix: {hint}valid: {', '.join(sorted(str(v) for v in valid)) or '(none)'}"


def _unknown_keys(where: str, cfg: dict, valid: tuple[str, ...] | list[str], what: str = "key") -> list[str]:
    return [f"{where}: unknown {what} {key!r}; {_fix_for(key, valid)}" for key in cfg if key not in valid]


def _mapping(where: str, value: Any, example: str, problems: list[str]) -> dict | None:
    """``value`` when it is a mapping (None counts as empty), else a problem and None."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a mapping, got {value!r}; fix: e.g. {example}")
        return None
    return value


def recipe_problems(where: str, recipe: Any) -> list[str]:
    """Keys are fields of ``training.Recipe``; ints where ints, numbers where floats, known choices."""
    from dataclasses import fields

    from .training import Recipe

    problems: list[str] = []
    recipe = _mapping(where, recipe, "{epochs: 3, lr: 0.05}", problems)
    if recipe is None:
        return problems
    kinds = {f.name: str(f.type) for f in fields(Recipe)}
    problems += _unknown_keys(where, recipe, list(kinds))
    for key, value in recipe.items():
        kind = kinds.get(key)
        if kind == "int" and not (_is_int(value) and value >= (1 if key == "batch_size" else 0)):
            low = "a positive" if key == "batch_size" else "a non-negative"
            problems.append(f"{where}.{key}: {value!r} is not {low} integer; fix: e.g. {key}: "
                            f"{getattr(Recipe, key)}")
        elif kind == "float" and not (_is_number(value) and value >= 0):
            problems.append(f"{where}.{key}: {value!r} is not a non-negative number; fix: e.g. {key}: "
                            f"{getattr(Recipe, key)}")
        elif kind == "str" and key in RECIPE_CHOICES and value not in RECIPE_CHOICES[key]:
            problems.append(f"{where}.{key}: unknown {key} {value!r}; {_fix_for(value, RECIPE_CHOICES[key])}")
    return problems


def runtime_problems(where: str, runtimes: Any) -> list[str]:
    """`runtimes:` is a non-empty list of distinct known runtime names."""
    example = f"fix: e.g. runtimes: [{', '.join(RUNTIME_NAMES)}]"
    if not (isinstance(runtimes, list) and runtimes and all(isinstance(r, str) for r in runtimes)):
        return [f"{where}: must be a non-empty list of runtime names, got {runtimes!r}; {example}"]
    problems = [f"{where}: unknown runtime {r!r}; {_fix_for(r, RUNTIME_NAMES)}" for r in runtimes
                if r not in RUNTIME_NAMES]
    if len(set(runtimes)) != len(runtimes):
        problems.append(f"{where}: {runtimes!r} names a runtime twice; fix: list each once")
    return problems


def _teacher_problems(where: str, teacher: Any, datasets: list[str], teachers: dict) -> list[str]:
    """The teacher is declared in params.yaml `teachers` for each of ``datasets``."""
    if not isinstance(teacher, str):
        return [f"{where}: teacher must be a teacher name, got {teacher!r}; fix: one of {', '.join(sorted(teachers))}"]
    if teacher not in teachers:
        return [f"{where}: unknown teacher {teacher!r}; {_fix_for(teacher, list(teachers))} (params.yaml `teachers`)"]
    declared = teachers[teacher].get("dataset") if isinstance(teachers[teacher], dict) else None
    if declared is None:
        return [f"{where}: teacher {teacher} declares no dataset; fix: set teachers.{teacher}.dataset in params.yaml"]
    problems = []
    for dataset in datasets:
        if declared != dataset:
            fitting = sorted(n for n, t in teachers.items() if isinstance(t, dict) and t.get("dataset") == dataset)
            problems.append(f"{where}: teacher {teacher} was declared for {declared} (teachers.{teacher}.dataset), "
                            f"not {dataset}; fix: name a {dataset} teacher"
                            + (f" ({', '.join(fitting)})" if fitting else "")
                            + (f" or restrict the case with `datasets: [{declared}]`" if len(datasets) > 1 else ""))
    return problems


def _tier_settings_problems(name: str, cfg: Any, params: dict) -> list[str]:
    """Problems of a tier's own keys and of its datasets (not of its cases)."""
    where = f"tiers.{name}"
    problems: list[str] = []
    cfg = _mapping(where, cfg, "{threads: 2, datasets: {...}, cases: [...]}", problems)
    if cfg is None:
        return problems
    problems += _unknown_keys(where, cfg, TIER_KEYS)
    if "runtimes" in cfg:
        problems += runtime_problems(f"{where}.runtimes", cfg["runtimes"])
    for key, low in TIER_MINIMUM.items():
        if key in cfg and not (_is_int(cfg[key]) and cfg[key] >= low):
            problems.append(f"{where}.{key}: {cfg[key]!r} is not an integer >= {low}; fix: e.g. {key}: "
                            f"{TIER_DEFAULTS[key]}")
    datasets = _mapping(f"{where}.datasets", cfg.get("datasets"), "{digits: {teacher: digits_cnn}}", problems)
    if datasets is None:
        return problems
    if not datasets:
        problems.append(f"{where}.datasets: no datasets; fix: declare at least one, e.g. "
                        "datasets: {digits: {teacher: digits_cnn}}")
    teachers = params.get("teachers") or {}
    for ds, ds_cfg in datasets.items():
        at = f"{where}.datasets.{ds}"
        if ds not in DATASETS:
            problems.append(f"{at}: unknown dataset {ds!r}; {_fix_for(ds, DATASETS.list())}")
            continue  # its settings are not checked against a dataset that does not exist
        ds_cfg = _mapping(at, ds_cfg, "{teacher: NAME, subset: {train: 3000}, recipe: {epochs: 3}}", problems)
        if ds_cfg is None:
            continue
        problems += _unknown_keys(at, ds_cfg, DATASET_KEYS)
        if "teacher" in ds_cfg:
            problems += _teacher_problems(f"{at}.teacher", ds_cfg["teacher"], [ds], teachers)
        subset = _mapping(f"{at}.subset", ds_cfg.get("subset"), "{train: 3000, val: 1000, test: 1000}", problems)
        for part, size in (subset or {}).items():
            if part not in SUBSET_KEYS:
                problems.append(f"{at}.subset: unknown part {part!r}; {_fix_for(part, SUBSET_KEYS)}")
            elif not (_is_int(size) and size > 0):
                problems.append(f"{at}.subset.{part}: {size!r} is not a positive integer; fix: e.g. {part}: 1000")
        problems += recipe_problems(f"{at}.recipe", ds_cfg.get("recipe"))
    return problems


def _entry_problems(where: str, entry: Any, tier_datasets: dict, teachers: dict) -> list[str]:
    """Problems of one `cases:` entry on its own (keys, types, names, budgets, settings, teacher)."""
    from .models import MODELS

    problems: list[str] = []
    entry = _mapping(where, entry, "{method: reference}", problems)
    if entry is None:
        return problems
    problems += _unknown_keys(where, entry, sorted(CASE_KEYS))
    method_name = entry.get("method")
    method = None
    if method_name is None:
        problems.append(f"{where}: no `method:`; fix: add one (`slimbench list methods`)")
    elif not isinstance(method_name, str) or method_name not in METHODS:
        problems.append(f"{where}.method: unknown method {method_name!r}; {_fix_for(method_name, METHODS.list())}")
    else:
        method = METHODS.get(method_name)
    datasets = entry.get("datasets")
    if datasets is None:
        datasets = list(tier_datasets)
    elif not (isinstance(datasets, list) and datasets and all(isinstance(d, str) for d in datasets)):
        problems.append(f"{where}.datasets: must be a non-empty list of dataset names, got {datasets!r}; "
                        f"fix: e.g. datasets: [{next(iter(tier_datasets), 'digits')}]")
        datasets = []
    else:
        for ds in datasets:
            if ds not in tier_datasets:
                problems.append(f"{where}.datasets: dataset {ds!r} is not declared in the tier's datasets; "
                                f"{_fix_for(ds, list(tier_datasets))}")
        datasets = [d for d in datasets if d in tier_datasets]
    model = entry.get("model", "reference")
    if not isinstance(model, str) or (model != "reference" and model not in MODELS):
        problems.append(f"{where}.model: unknown model {model!r}; {_fix_for(model, ['reference', *MODELS.list()])}")
    _mapping(f"{where}.model_kwargs", entry.get("model_kwargs"), "{image_size: 28}", problems)
    for key in ("tag", "study", "from_case"):
        if key in entry and not isinstance(entry[key], str):
            problems.append(f"{where}.{key}: {entry[key]!r} is not a string; "
                            f"fix: quote it, e.g. {key}: \"{entry[key]}\"")
    seeds = entry.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(_is_int(s) and s >= 0 for s in seeds)
                                  and len(set(seeds)) == len(seeds)):
        problems.append(f"{where}.seeds: must be a non-empty list of distinct non-negative integers, got {seeds!r}; "
                        "fix: e.g. seeds: [0, 1, 2]")
    if "budget" in entry and "budgets" in entry:
        problems.append(f"{where}: both `budget:` and `budgets:`; fix: keep one (`budgets:` lists several)")
    if "budgets" in entry:
        budgets = entry["budgets"]
        if not (isinstance(budgets, list) and budgets):
            problems.append(f"{where}.budgets: must be a non-empty list of budgets, got {budgets!r}; "
                            "fix: e.g. budgets: [{sparsity: 0.5}, {sparsity: 0.9}]")
            budgets = []
        placed = [(f"{where}.budgets[{j}]", b) for j, b in enumerate(budgets)]
    else:
        placed = [(f"{where}.budget", entry.get("budget"))]
    for at, cfg in placed:
        try:
            budget = Budget.from_config(cfg)
        except SlimbenchError as exc:
            message = str(exc).removesuffix("; fix the case in params.yaml")
            problems.append(f"{at}: {message}" + ("" if "fix:" in message else f"; fix: e.g. {BUDGET_EXAMPLE}"))
            continue
        if method is not None and budget.kind not in method.budget_kinds:
            problems.append(f"{at}: method {method.name} takes budget kinds {', '.join(method.budget_kinds)}, "
                            f"not {budget.kind!r}; fix: "
                            + ("remove the budget" if method.budget_kinds == ("none",) else
                               f"e.g. budget: {{{next(k for k in method.budget_kinds if k != 'none')}: ...}}"))
    settings = _mapping(f"{where}.settings", entry.get("settings"), "{temperature: 4.0}", problems)
    if settings and method is not None:
        problems += _unknown_keys(f"{where}.settings (method {method.name})", settings, sorted(method.settings),
                                  what="setting")
    if "recipe" in entry:
        problems += recipe_problems(f"{where}.recipe", entry["recipe"])
    if "runtimes" in entry:
        problems += runtime_problems(f"{where}.runtimes", entry["runtimes"])
    if "teacher" in entry:
        problems += _teacher_problems(f"{where}.teacher", entry["teacher"], datasets, teachers)
    elif not entry.get("from_case"):  # every case is measured against its teacher (harness.case_reference)
        for ds in datasets:
            if isinstance(tier_datasets.get(ds), dict) and tier_datasets[ds].get("teacher"):
                continue
            problems.append(f"{where}: dataset {ds} has no teacher (the reference every case is compared with); "
                            f"fix: set `teacher:` in the tier's datasets.{ds} or in the case")
    if method is not None and getattr(method, "upstream_family", None) and not entry.get("from_case"):
        problems.append(f"{where}: method {method.name} starts from another case's model; "
                        "fix: set `from_case:` to a case id of this tier")
    return problems


def tier_problems(name: str, paths: Paths | None = None) -> list[str]:
    """Every problem of tier ``name`` in params.yaml, one line each (where, what, fix); [] when it is
    sound. Keys at every level, types, registered datasets/models/methods, method settings and
    budget kinds, budgets, teachers and their datasets, duplicate ids and ``from_case`` links.
    Never raises for a bad tier: it is what `slimbench check` and the benchmark collection print."""
    paths = paths or default_paths()
    params = load_params(paths.root)
    tiers = params.get("tiers") or {}
    if not isinstance(tiers, dict):
        return ["tiers: must map tier names to tiers; fix: see the tiers in the committed params.yaml"]
    if name not in tiers:
        return [f"unknown tier {name!r}; valid tiers: {', '.join(sorted(tiers))}"]
    cfg = tiers[name]
    problems = _tier_settings_problems(name, cfg, params)
    if not isinstance(cfg, dict):
        return problems
    tier_datasets = cfg.get("datasets") if isinstance(cfg.get("datasets"), dict) else {}
    tier_datasets = {k: v for k, v in tier_datasets.items() if k in DATASETS}
    teachers = params.get("teachers") if isinstance(params.get("teachers"), dict) else {}
    entries = cfg.get("cases")
    if not isinstance(entries, list) or not entries:
        return problems + [f"tiers.{name}.cases: must be a non-empty list of case entries, got {entries!r}; "
                           "fix: e.g. cases: [{method: reference}]"]
    sound = []
    for i, entry in enumerate(entries):
        found = _entry_problems(f"tiers.{name}.cases[{i}]", entry, tier_datasets, teachers)
        problems += found
        if not found:
            sound.append((i, entry))
    return problems + _link_problems(name, cfg, tier_datasets, sound, unsound=len(entries) - len(sound))


def _link_problems(name: str, cfg: dict, tier_datasets: dict, entries: list[tuple[int, dict]],
                   unsound: int = 0) -> list[str]:
    """Duplicate case ids and ``from_case`` links among the entries that are sound on their own
    (``unsound`` entries with problems of their own are left out)."""
    settings = {k: cfg[k] if _is_int(cfg.get(k)) else v for k, v in TIER_DEFAULTS.items()}
    tier = Tier(name, datasets={k: v if isinstance(v, dict) else {} for k, v in tier_datasets.items()}, **settings)
    problems, cases, origin = [], [], {}
    for i, entry in entries:
        where = f"tiers.{name}.cases[{i}]"
        try:
            expanded = _expand_entry(tier, entry, where)
        except SlimbenchError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for case in expanded:
            if case.case_id in origin:
                problems.append(f"{where}: duplicate case id {case.case_id!r} (also made by "
                                f"cases[{origin[case.case_id]}]); fix: add a distinct `tag`")
            else:
                origin[case.case_id] = i
                cases.append(case)
    by_id = {c.case_id: c for c in cases}
    for case in cases:
        if case.from_case and case.from_case not in by_id and unsound:
            problems.append(f"tiers.{name}.cases[{origin[case.case_id]}]: case {case.case_id}: from_case "
                            f"{case.from_case!r} is not a case of tier {name}, or comes from an entry with the "
                            f"problems above; fix: those first, then see `slimbench list cases --tier {name}`")
        elif case.from_case:
            try:
                _chain(case, by_id)
            except ConfigError as exc:
                problems.append(f"tiers.{name}.cases[{origin[case.case_id]}]: {exc}")
    return problems
