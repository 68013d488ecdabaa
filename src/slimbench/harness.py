"""Runs one case: build the inputs, apply the method (or reuse its cached result), measure.

Quality numbers (top-1) are cached with the compressed model; cost numbers (size, MACs,
latency) are measured fresh in every run so that ratios compare models timed in one run.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import shutil
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import case_cache, metrics, roofline, stats
from .cases import Case, Tier, case_runtimes
from .config import Paths, default_paths
from .datasets import DataSplits, load_splits
from .determinism import deterministic
from .environment import fingerprint
from .errors import ConfigError
from .methods import METHODS, Context
from .methods.quant_deploy import Artefact
from .models import build_model_for
from .rows import encode_predictions
from .teachers import load_teacher
from .training import evaluate, normalize, predict, trained_on


@dataclass
class Outcome:
    """A compressed model with the quality numbers measured when it was made."""

    model: nn.Module
    reference: nn.Module
    reference_meta: dict[str, Any]
    data: DataSplits
    quality: dict[str, Any]
    cache_hit: bool
    key: str | None = None  # the case-cache key the model is (or would be) stored under
    predictions: torch.Tensor | None = None  # predicted class of every test image, in order


# A case's key holds the md5 of the code that decides its model (``code_md5``): its method's module
# and every slimbench module that module imports (``import_closure``), plus the harness side that
# every method's model goes through: seeding (determinism.py), training and evaluation
# (training.py), data (datasets), architectures (models), with what those import, and the harness
# functions that make the model and its cached quality numbers (``_model_code``). Editing a module
# invalidates the models of the methods that import it, and only those. case_cache.py is left
# out: it stores and checks entries (its own import of metrics is for the md5 check) and decides
# no model; what an entry holds is CACHE_FORMAT.
HARNESS_SOURCES = ("determinism.py", "training.py", "datasets/__init__.py", "models/__init__.py")
PACKAGE = Path(__file__).parent
# What a cache entry holds (case_cache.py's files, the quality numbers compress_case stores): bump
# it when that changes, so that entries of the older kind are not read as the new. Code changes
# need no bump (code_md5 follows them).
# 2: entries hold the test predictions; keys hold the thread count. 3: entries hold the model's
# state_dict (rebuilt by Method.restore, never unpickled) and entry.json (md5 of every file, model_md5).
CACHE_FORMAT = 3


def imported_files(path: Path, source: bytes, package: Path) -> set[Path]:
    """The files of ``package`` (src/slimbench) that the module at ``path`` imports: module-level
    and function-level imports, relative or absolute (``slimbench.x``). ``from X import a`` is
    X/a.py (or X/a/__init__.py) when ``a`` is a submodule, else X itself; a package is its
    __init__.py. Parent packages run by the import are not counted (methods/__init__.py imports
    every method)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_package_path(alias.name, package) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.parents[node.level - 1].joinpath(*(node.module.split(".") if node.module else ()))
            else:
                base = _package_path(node.module or "", package)
            targets = [] if base is None else [base / a.name if _module_file(base / a.name) else base
                                               for a in node.names]
        else:
            continue
        found |= {f for t in targets if t is not None and (f := _module_file(t)) and f.is_relative_to(package)}
    return found


def _package_path(dotted: str, package: Path) -> Path | None:
    """``slimbench.methods.base`` -> package/methods/base (no suffix); None outside slimbench."""
    parts = dotted.split(".")
    return package.joinpath(*parts[1:]) if parts[0] == package.name else None


def _module_file(stem: Path) -> Path | None:
    """The file of module ``stem``: stem.py, or stem/__init__.py for a package; None if neither."""
    if stem.with_name(stem.name + ".py").is_file():
        return stem.with_name(stem.name + ".py")
    return stem / "__init__.py" if (stem / "__init__.py").is_file() else None


def import_closure(roots: list[Path], package: Path) -> dict[Path, bytes]:
    """The ``roots`` and every file of ``package`` they import, transitively: {path: source}."""
    sources: dict[Path, bytes] = {}
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path not in sources:
            sources[path] = path.read_bytes()
            todo += imported_files(path, sources[path], package)
    return sources


def code_sources(method: str, package: Path | None = None) -> dict[str, bytes]:
    """{path relative to the package: source} of the modules that decide ``method``'s models."""
    package = package or PACKAGE
    module = Path(inspect.getsourcefile(type(METHODS.get(method)))).relative_to(Path(__file__).parent)
    roots = [package / module, *(package / entry for entry in HARNESS_SOURCES)]
    return {path.relative_to(package).as_posix(): source
            for path, source in sorted(import_closure(roots, package).items())}


def _model_code() -> tuple:
    """The harness-side code every compressed model goes through: how compress_case builds the
    input, seeds, calls (or restores) the method and measures the quality numbers it caches, and
    the case's parsed budget and recipe."""
    return (compress_case, case_builder, Case.budget.func, Case.training_recipe.func)


def code_md5(method: str) -> str:
    """md5 over the code that decides ``method``'s models (see HARNESS_SOURCES above)."""
    return _code_md5(method, PACKAGE)


@lru_cache(maxsize=None)
def _code_md5(method: str, package: Path) -> str:
    digest = hashlib.md5()
    for name, source in code_sources(method, package).items():
        digest.update(f"{name}\0{len(source)}\0".encode())
        digest.update(source)
    for function in _model_code():
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()


def cache_key(case: Case, data_md5: str, teacher_md5: str | None, upstream_key: str | None = None,
              threads: int | None = None) -> str:
    """Identifies a compressed model by its inputs: case config, data, teacher, code, the CPU
    thread count it is made with (it changes the order of float reductions, hence the weights)
    and, for a ``from_case`` case, the key of the model it starts from.

    Not by device or torch build: a model trained on a GPU machine (`slimbench compress`) serves
    a CPU run, and the row says where it was trained (``trained_on``).
    """
    threads = threads or torch.get_num_threads()
    parts = [case.config_hash(), data_md5, teacher_md5, code_md5(case.method), CACHE_FORMAT, threads]
    text = json.dumps(parts + ([upstream_key] if upstream_key else []))
    return hashlib.md5(text.encode()).hexdigest()


def case_builder(case: Case, data: DataSplits, reference_meta: dict[str, Any]):
    """Builds the case's architecture (the reference's when model == "reference") with overrides."""
    if case.model == "reference":
        arch, kwargs = reference_meta["architecture"], reference_meta.get("model_kwargs", {})
    else:
        arch, kwargs = case.model, case.model_kwargs
    return lambda **overrides: build_model_for(arch, data, {**kwargs, **overrides})


def compress_case(case: Case, paths: Paths | None = None, cached_only: bool = False,
                  key_threads: int | None = None) -> Outcome | None:
    """Apply the case's method to its input model, or load the cached result.

    The input model is the teacher (``model: reference``), a fresh student, or, for a
    ``from_case`` case, the upstream case's compressed model, which then also serves as the
    reference the row compares against. With ``cached_only``, a cacheable case that is not
    cached (or whose upstream is not) returns None instead of training. ``key_threads`` is the
    thread count the key names when it is not this process's: a model trained on an accelerator
    does not depend on the host's threads, and is keyed with the tier's so a CPU run finds it.
    """
    paths = paths or default_paths()
    budget = case.budget
    method = METHODS.get(case.method)
    upstream = _upstream_outcome(case, paths, cached_only, key_threads)
    if case.from_case and upstream is None:
        return None
    data = upstream.data if upstream else load_splits(case.dataset, {"subset": case.subset}, paths)
    reference, reference_meta = case_reference(case, paths)
    key = cache_key(case, data.data_md5, reference_meta["md5"], upstream.key if upstream else None, key_threads)
    if upstream:
        reference = upstream.model
    key_dir = paths.cache / case.tier / case.case_id / key
    build = case_builder(case, data, reference_meta)
    resume_dir = key_dir.parent / f".resume-{key}" if method.cacheable else None
    ctx = Context(data=data, teacher=reference, recipe=replace(case.training_recipe),  # a copy: the case keeps its own
                  settings=dict(case.settings), build_model=build, seed=case.seed, resume_dir=resume_dir)

    def given_model() -> nn.Module:  # the method's input; called seeded: a student's initial weights are the case's
        return upstream.model if upstream else reference if case.model == "reference" else build()

    def restore(state: dict[str, Any], quality: dict[str, Any]) -> nn.Module:
        """The cached model rebuilt by its method from the input compress got, run once as a check."""
        with deterministic(case.seed):
            restore_ctx = replace(ctx, settings=dict(ctx.settings), log=dict(quality.get("method_log") or {}))
            model = method.restore(given_model(), state, budget, restore_ctx)
        with torch.inference_mode():
            model(example_input(data, 2))
        return model

    cached = case_cache.load(key_dir, restore) if method.cacheable else None
    if cached is not None:
        return Outcome(cached[0], reference, reference_meta, data, cached[1], cache_hit=True, key=key,
                       predictions=cached[2])
    if cached_only and method.cacheable:
        return None
    start = time.perf_counter()
    with deterministic(case.seed):  # seeded before the student is built: its initial weights are the case's
        model = method(given_model(), budget, ctx).eval()
    seconds = time.perf_counter() - start
    predictions = predict(model, data.test, data).argmax(1)
    quality = {"top1": 100.0 * (predictions == data.test.labels).float().mean().item(), "val_top1": evaluate(model, data.val, data),
               "reference_top1": evaluate(reference, data.test, data), "train_seconds": round(seconds, 2),
               "trained_on": trained_on(), "threads": torch.get_num_threads(), "method_log": ctx.log}
    if method.cacheable:
        case_cache.store(key_dir, model, quality, predictions)
        shutil.rmtree(resume_dir, ignore_errors=True)
    return Outcome(model, reference, reference_meta, data, quality, cache_hit=False, key=key,
                   predictions=predictions)


def case_reference(case: Case, paths: Paths) -> tuple[nn.Module, dict[str, Any]]:
    """The case's teacher, checked to belong to the case's dataset."""
    if case.teacher is None:
        raise ConfigError(f"case {case.case_id}: dataset {case.dataset} has no `teacher:` in tier {case.tier}; "
                          "fix: name a teacher from params.yaml `teachers`")
    reference, meta = load_teacher(case.teacher, paths)
    if meta.get("dataset", case.dataset) != case.dataset:
        raise ConfigError(f"case {case.case_id}: teacher {case.teacher} was trained on {meta['dataset']}, "
                          f"not {case.dataset}; fix: name a {case.dataset} teacher")
    return reference, meta


def _upstream_outcome(case: Case, paths: Paths, cached_only: bool, key_threads: int | None) -> Outcome | None:
    """The compressed model of the case's ``from_case`` (made now if needed), or None."""
    if not case.from_case:
        return None
    if case.upstream is None:
        raise ConfigError(f"case {case.case_id}: its from_case {case.from_case!r} is not resolved; "
                          "fix: take the case from cases.expand_cases, which resolves it")
    return compress_case(case.upstream, paths, cached_only, key_threads)


def example_input(data: DataSplits, batch: int) -> torch.Tensor:
    """A normalised batch of real test images."""
    return normalize(data.test.images[:batch], data.mean, data.std).contiguous()


def inference_fn(model: nn.Module):
    """The callable the benchmark fixture times: one forward without autograd."""
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return forward


def row_environment() -> dict[str, Any]:
    """What a row's numbers depend on besides the case: torch, CPU (model, flags, cores, caches),
    threads, commit, dirty tree, and the machine's GEMM peaks (``roofline``, measured once per
    process at the tier's threads)."""
    env = fingerprint(default_paths().root)
    return {**{k: env[k] for k in ("torch", "cpu", "cpu_flags_md5", "cpu_cores", "cpu_caches", "threads",
                                   "quantized_engine", "commit", "dirty")}, "roofline": roofline.machine_peaks()}


def latency_fields(timing: metrics.PairedTiming, suffix: str) -> dict[str, Any]:
    """Medians, spread and the speed-up's 95% interval of one paired timing (suffix "" or "_batch")."""
    own, own_iqr = stats.median_iqr(timing.case_ms)
    ref, ref_iqr = stats.median_iqr(timing.reference_ms)
    low, high = stats.bootstrap_ratio_ci(timing.reference_ms, timing.case_ms)
    return {f"latency_ms{suffix}": round(own, 4), f"latency_ms{suffix}_iqr": round(own_iqr, 4),
            f"reference_latency_ms{suffix}": round(ref, 4), f"reference_latency_ms{suffix}_iqr": round(ref_iqr, 4),
            f"speedup{suffix}": round(ref / own, 3), f"speedup{suffix}_ci95": [round(low, 3), round(high, 3)],
            f"forwards_per_turn{suffix}": timing.forwards_per_turn}


def accuracy_fields(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Test top-1, its Wilson 95% interval, and the per-image predictions (compact, for McNemar)."""
    correct, n = int((predictions == labels).sum()), len(labels)
    low, high = stats.wilson_interval(correct, n)
    return {"top1": round(100.0 * correct / n, 2), "top1_ci95": [round(100 * low, 2), round(100 * high, 2)],
            "test_size": n, **predictions_fields(predictions, labels)}


# Per-row metrics a method asks for by name (``Method.row_metrics``), measured here like every other cost.
ROW_METRICS = {"per_layer": metrics.per_layer_params}  # (reference, model) -> value


def measure(case: Case, outcome: Outcome, tier: Tier, benchmark_ms: float | None = None) -> dict[str, Any]:
    """The leaderboard row of a case: cost metrics measured now plus the cached quality numbers.

    Latency comes from turns alternated with the reference (``metrics.paired_latency``) at batch
    1 and at the tier's batch size; ``benchmark_ms`` (pytest-benchmark's own median of single
    forwards) is kept beside it for reference.
    """
    model, reference, data = outcome.model, outcome.reference, outcome.data
    method = METHODS.get(case.method)
    one, many = example_input(data, 1), example_input(data, tier.batch_size)
    timing = dict(rounds=tier.latency_rounds, warmup=tier.latency_warmup)
    single = metrics.paired_latency(reference, model, one, **timing)
    batch = metrics.paired_latency(reference, model, many, **timing)
    budget = case.budget
    q = outcome.quality
    accuracy = accuracy_fields(outcome.predictions, data.test.labels)
    env = row_environment()
    speeds = {**latency_fields(single, ""), **latency_fields(batch, "_batch")}
    row = {
        "case_id": case.case_id, "method": case.method, "family": case.family, "dataset": case.dataset,
        "model": outcome.reference_meta["architecture"] if case.model == "reference" else case.model,
        "teacher": case.teacher, "budget_kind": budget.kind, "budget_value": budget.value,
        **accuracy, "val_top1": round(q["val_top1"], 2),
        "reference_top1": round(q["reference_top1"], 2), "top1_delta": round(q["top1"] - q["reference_top1"], 2),
        "params": metrics.count_stored_params(model), "nonzero_params": metrics.count_nonzero(model),
        "sparsity": round(metrics.sparsity(model), 4), "size_bytes": metrics.size_bytes(model),
        "macs": metrics.count_macs(model, one), **speeds,
        "seed": case.seed, "train_seconds": q["train_seconds"],
        "study": case.study, "group_id": case.group_id, "trained_on": q.get("trained_on", "cpu"),
        "tag": case.tag, "from_case": case.from_case, "environment": env,
        # keys beyond the contract
        "tier": case.tier, "num_classes": data.num_classes, "weight_bits": metrics.weight_bits(model), "batch_size": tier.batch_size,
        "threads": torch.get_num_threads(), "latency_rounds": tier.latency_rounds,
        "latency_samples_ms": {"b1": _samples(single), "batch": _samples(batch)},
        "benchmark_ms": None if benchmark_ms is None else round(benchmark_ms, 4),
        "reference_params": metrics.count_stored_params(reference), "reference_size_bytes": metrics.size_bytes(reference),
        "reference_macs": metrics.count_macs(reference, one), "subset": case.subset, "settings": case.settings,
        "effective_settings": method.effective_settings(case.settings),  # the method's defaults + the case's
        "recipe": case.recipe, "method_log": q.get("method_log", {}), "cache_hit": outcome.cache_hit,
        "size_bytes_zipped": metrics.zipped_size_bytes(model),
        "reference_size_bytes_zipped": metrics.zipped_size_bytes(reference),
        **provenance(case, outcome, env),
    }
    row.update(artefact_counts(model, one))
    row.update({name: ROW_METRICS[name](reference, model) for name in method.row_metrics})
    row.update(roofline_fields(row, env["roofline"]))
    row.update(runtime_fields(model, reference, data, tier, case_runtimes(case, tier), outcome.predictions))
    row.update(roofline_fields(row, env["roofline"], [r for r in case_runtimes(case, tier) if r != "eager"]))
    row["budget_met"] = budget.is_met({**row, "speedup": row["speedup"]})
    return row


def artefact_counts(model: nn.Module, one: torch.Tensor) -> dict[str, Any]:
    """Counts the module walk (metrics.py) cannot see: a runtime file's recorded params, MACs
    and bits (``Artefact``); for a graph without conv/linear modules (a PT2E export), MACs from torch's flop
    counter and the width of its int8 constants."""
    if isinstance(model, Artefact):
        params, macs, bits = (int(v) for v in model.info)
        return {"params": params, "nonzero_params": params, "macs": macs, "weight_bits": bits}
    if not isinstance(model, torch.fx.GraphModule) or metrics.count_macs(model, one):
        return {}
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(one)
    tensors = [t for n in model.graph.nodes if n.op == "get_attr"
               and isinstance(t := _attribute(model, n.target), torch.Tensor)]
    params = sum(t.numel() for t in tensors if t.dim() > 0)
    bits = 8 if any(t.dtype == torch.int8 and t.dim() >= 2 for t in tensors) else metrics.weight_bits(model)
    return {"macs": counter.get_total_flops() // 2, "weight_bits": bits,
            **({"params": params} if params > metrics.count_stored_params(model) else {})}


def _attribute(module: nn.Module, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module


def runtime_fields(model: nn.Module, reference: nn.Module, data: DataSplits, tier: Tier, names: tuple[str, ...],
                   predictions: torch.Tensor | None) -> dict[str, Any]:
    """Latency, speed-up (against the reference under the same runtime, paired turns as for eager)
    and, where numerics change, test top-1 under each non-eager runtime; ``compile_seconds`` per
    runtime; a runtime that fails gets null values and a line in ``runtime_errors``."""
    from . import runtimes

    others = [n for n in names if n != "eager"]
    if not others:
        return {}
    one, many = example_input(data, 1), example_input(data, tier.batch_size)
    timing = dict(rounds=tier.latency_rounds, warmup=tier.latency_warmup)
    fields: dict[str, Any] = {"runtimes": list(names), "compile_seconds": {}, "runtime_errors": []}
    for name in others:
        try:
            case_fn, seconds = runtimes.prepare_timed(name, model, [one, many])
            ref_fn, _ = runtimes.prepare_timed(name, reference, [one, many], reuse_key=metrics.model_md5(reference))
            single = metrics.paired_latency(runtimes.Timed(ref_fn), runtimes.Timed(case_fn), one, **timing)
            batch = metrics.paired_latency(runtimes.Timed(ref_fn), runtimes.Timed(case_fn), many, **timing)
            fields.update({**latency_fields(single, f"_{name}"), **latency_fields(batch, f"_batch_{name}")})
            fields["compile_seconds"][name] = seconds
            if not runtimes.RUNTIMES[name].exact:
                fields.update(numerics_fields(name, case_fn, model, data, tier.batch_size, predictions))
        except Exception as error:  # noqa: BLE001  (one runtime's failure is a row note, never the tier's)
            fields["runtime_errors"].append(runtimes.error_line(name, error))
            fields.update({f"{key}_{name}": None for key in ("latency_ms", "latency_ms_batch", "speedup",
                                                             "speedup_batch", "top1")})
    fields["runtime_errors"] = fields["runtime_errors"] or None
    return fields


@torch.inference_mode()
def numerics_fields(name: str, forward, model: nn.Module, data: DataSplits, batch: int,
                    predictions: torch.Tensor | None) -> dict[str, Any]:
    """``top1_<runtime>`` from a full test-set pass under the runtime (batches of the tier's size,
    the last one padded: compiled graphs keep their shapes), argmax agreement with eager, and the
    largest absolute difference of the outputs on the first batch."""
    images, labels = data.test.images, data.test.labels
    chunks = []
    for start in range(0, len(images), batch):
        x = normalize(images[start:start + batch], data.mean, data.std)
        padded = torch.cat([x, x.new_zeros(batch - len(x), *x.shape[1:])]) if len(x) < batch else x
        chunks.append(forward(padded.contiguous())[:len(x)].float())
    mine = torch.cat(chunks).argmax(1)
    first = normalize(images[:batch], data.mean, data.std).contiguous()
    diff = (forward(first).float() - model(first).float()).abs().max().item()
    fields = {f"top1_{name}": round(100.0 * (mine == labels).float().mean().item(), 2),
              f"max_abs_diff_{name}": float(f"{diff:.4g}")}
    if predictions is not None:
        fields[f"agreement_{name}"] = round((mine == predictions).float().mean().item(), 5)
    return fields


def roofline_fields(row: dict[str, Any], peaks: dict[str, Any], runtimes: list[str] | None = None) -> dict[str, Any]:
    """``gflops``/``peak_fraction`` (batch 1) and ``_batch`` from a row's latencies, eager (no
    ``runtimes``) or for each runtime (``gflops_<runtime>``, ``gflops_batch_<runtime>``)."""
    fields = {}
    for suffix in [""] if runtimes is None else [f"_{r}" for r in runtimes]:
        for part, batch in (("", 1), ("_batch", row["batch_size"])):
            latency = row.get(f"latency_ms{part}{suffix}")
            fields.update(roofline.row_fields(row["macs"], latency, batch, row["weight_bits"], peaks, f"{part}{suffix}"))
    return fields


def _samples(timing: metrics.PairedTiming) -> dict[str, list[float]]:
    """Raw per-turn times (ms, 4 significant digits) kept for `slimbench compare`'s tests."""
    return {"reference": [float(f"{t:.4g}") for t in timing.reference_ms],
            "case": [float(f"{t:.4g}") for t in timing.case_ms]}


def provenance(case: Case, outcome: Outcome, env: dict[str, Any]) -> dict[str, Any]:
    """Where a row's model comes from: its weights' md5, cache key, config, data and teacher md5,
    the thread count it was made with, and the commit (dirty or not, from ``env``) that measured it."""
    return {"model_md5": metrics.model_md5(outcome.model), "cache_key": outcome.key,
            "config_hash": case.config_hash(), "data_md5": outcome.data.data_md5,
            "teacher_md5": outcome.reference_meta.get("md5"), "threads_trained": outcome.quality.get("threads"),
            "commit": env["commit"], "dirty": env["dirty"], "provenance": "measured"}


def predictions_fields(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """``predictions_md5`` (of the uint8 predicted classes) and the row's transport copy of
    predictions and labels (`leaderboard` moves it to a sidecar)."""
    pred = predictions.to(torch.uint8).numpy()
    return {"predictions_md5": hashlib.md5(pred.tobytes()).hexdigest(),
            "predictions_b64": encode_predictions(pred, labels.numpy())}
