"""The case cache holds data only (state_dict, predictions, JSON), checked by md5 before use:
planted pickles never run, flipped bytes and half-written or old entries are misses that are
rebuilt, and every registered method's model survives a store and a restore."""

import builtins
import json
import os
import shutil
import subprocess
from dataclasses import replace

import pytest
from conftest import mini_params, write_project
import torch

from slimbench import case_cache, harness, metrics
from slimbench.budgets import Budget
from slimbench.cases import expand_cases
from slimbench.determinism import deterministic
from slimbench.fileio import md5sum
from slimbench.methods import METHODS, Context
from slimbench.models import get_model
from slimbench.training import Recipe, predict

PARAMS = mini_params([{"method": "prune_global_magnitude", "budget": {"sparsity": 0.9}},
                      {"method": "quant_ptq_int8", "budget": {"bits": 8}, "settings": {"calibration_size": 64}}])


@pytest.fixture
def project(tmp_path, digits_model):
    return write_project(tmp_path, PARAMS, digits_model)


class Payload:
    """Unpickled, it creates ``marker`` (what a planted cache file could do instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def cached_entry(project, case):
    """Compress ``case`` into the cache; returns its outcome and its entry folder."""
    outcome = harness.compress_case(case, project)
    assert not outcome.cache_hit
    return outcome, project.cache / case.tier / case.case_id / outcome.key


def report_lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("cache entry ")]


def test_a_planted_pickle_never_runs_and_the_case_is_recomputed(project, capsys, tmp_path):
    case = expand_cases("mini", project)[0]
    first, entry = cached_entry(project, case)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), entry / "state.pt")
    capsys.readouterr()
    again = harness.compress_case(case, project)
    assert not marker.exists() and not again.cache_hit
    (line,) = report_lines(capsys)
    assert str(entry) in line and "state.pt md5" in line and line.endswith("; recomputing")
    assert metrics.model_md5(again.model) == metrics.model_md5(first.model)
    # with entry.json rewritten to match the planted file, torch.load(weights_only=True) refuses it
    torch.save(Payload(marker), entry / "state.pt")
    recorded = json.loads((entry / "entry.json").read_text())
    recorded["files"]["state.pt"] = md5sum(entry / "state.pt")
    (entry / "entry.json").write_text(json.dumps(recorded))
    assert not harness.compress_case(case, project).cache_hit and not marker.exists()
    (line,) = report_lines(capsys)
    assert "unreadable file (UnpicklingError" in line
    assert harness.compress_case(case, project).cache_hit
    # the payload is live: an unrestricted unpickler would have run it
    torch.save(Payload(marker), tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists()


def test_a_flipped_byte_in_tensor_data_is_caught_by_md5(project, capsys):
    case = expand_cases("mini", project)[0]
    first, entry = cached_entry(project, case)
    state = torch.load(entry / "state.pt", weights_only=True)
    name, tensor = max(state.items(), key=lambda kv: kv[1].numel())
    raw = bytearray((entry / "state.pt").read_bytes())
    at = bytes(raw).find(tensor.numpy().tobytes())
    assert at > 0
    raw[at + tensor.numel() * 2 + 1] ^= 0x04  # a mantissa bit of a float in the middle
    (entry / "state.pt").write_bytes(bytes(raw))
    flipped = torch.load(entry / "state.pt", weights_only=True)  # still loads, with one value changed
    assert int((flipped[name] != tensor).sum()) == 1
    capsys.readouterr()
    again = harness.compress_case(case, project)
    assert not again.cache_hit
    (line,) = report_lines(capsys)
    assert "state.pt md5" in line and "!= recorded" in line
    hit = harness.compress_case(case, project)
    assert hit.cache_hit and metrics.model_md5(hit.model) == metrics.model_md5(first.model)
    assert torch.equal(hit.predictions, first.predictions)


def test_an_entry_without_entry_json_is_a_miss(project, capsys):
    case = expand_cases("mini", project)[0]
    _, entry = cached_entry(project, case)
    (entry / "entry.json").unlink()  # killed mid-store (or copied in part)
    capsys.readouterr()
    assert not harness.compress_case(case, project).cache_hit
    (line,) = report_lines(capsys)
    assert "incomplete" in line
    assert harness.compress_case(case, project).cache_hit


def test_an_old_format_entry_is_never_unpickled(project, capsys, tmp_path):
    case = expand_cases("mini", project)[0]
    _, entry = cached_entry(project, case)
    marker = tmp_path / "payload-ran"
    for name in ("state.pt", "entry.json"):
        (entry / name).unlink()
    torch.save(Payload(marker), entry / "model.pt")  # what slimbench before cache format 3 stored
    capsys.readouterr()
    assert not harness.compress_case(case, project).cache_hit
    assert not marker.exists()
    (line,) = report_lines(capsys)
    assert "older slimbench" in line and "rebuilding" in line
    assert harness.compress_case(case, project).cache_hit


def test_an_unexpected_file_or_a_wrong_restore_is_a_miss(tmp_path, capsys, digits_model):
    key_dir = tmp_path / "case" / ("0" * 32)
    preds = torch.zeros(5, dtype=torch.long)
    case_cache.store(key_dir, digits_model, {"top1": 1.0}, preds)
    (key_dir / "model.pt").write_bytes(b"stray")
    assert case_cache.load(key_dir, lambda state, quality: digits_model) is None
    assert "unexpected file model.pt" in capsys.readouterr().out and not key_dir.exists()
    case_cache.store(key_dir, digits_model, {"top1": 1.0}, preds)
    other = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    assert case_cache.load(key_dir, lambda state, quality: other) is None  # restores other weights
    assert "restored model md5" in capsys.readouterr().out
    case_cache.store(key_dir, digits_model, {"top1": 1.0}, preds)

    def fails(state, quality):
        raise RuntimeError("size mismatch for features.0.weight\nmore detail")

    assert case_cache.load(key_dir, fails) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "restore failed (RuntimeError: size mismatch" in out
    case_cache.store(key_dir, digits_model, {"top1": 1.0}, preds)
    model, quality, predictions = case_cache.load(key_dir, lambda state, quality: digits_model)
    assert quality == {"top1": 1.0} and torch.equal(predictions, preds) and capsys.readouterr().out == ""


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_and_resume_state_is_kept(project, tmp_path):
    case = expand_cases("mini", project)[0]
    _, entry = cached_entry(project, case)
    shutil.rmtree(entry)
    case_dir, key = entry.parent, entry.name
    dead, live = case_dir / f".{key}.pid{dead_pid()}.entry.tmp", case_dir / f".{key}.pid{os.getppid()}.entry.tmp"
    old_style, resume = case_dir / f".{key}.k3x_9qaz", case_dir / f".resume-{'f' * 32}"
    for folder in (dead, live, old_style, resume):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"partial")
    assert not harness.compress_case(case, project).cache_hit  # looked up and stored again
    assert not dead.exists() and not old_style.exists() and live.exists() and resume.exists()
    # store alone cleans too
    other = tmp_path / "c" / key
    other.parent.mkdir()
    stale = other.parent / f".{key}.pid{dead_pid()}.entry.tmp"
    stale.mkdir()
    case_cache.store(other, get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8), {},
                     torch.zeros(3, dtype=torch.long))
    assert not stale.exists() and sorted(p.name for p in other.iterdir()) == \
        ["entry.json", "predictions.pt", "quality.json", "state.pt"]


def test_int8_models_are_cached_and_restored_through_the_harness(project):
    case = expand_cases("mini", project)[1]
    assert METHODS.get(case.method).cacheable
    first = harness.compress_case(case, project)
    again = harness.compress_case(case, project)
    assert not first.cache_hit and again.cache_hit
    assert metrics.model_md5(again.model) == metrics.model_md5(first.model)
    assert torch.equal(predict(again.model, first.data.test, first.data), predict(first.model, first.data.test, first.data))


# --- every registered method: store, restore, same weights and predictions --------------------

FEATURES = {"layers": [["features.6", "features.6"], ["features.10", "features.10"]]}
ROUND_TRIP = {  # method -> (budget, settings); unlisted methods get DEFAULT_BUDGETS[their first kind]
    "scratch": (Budget("params", 100_000), {}),
    "kd_logits": (Budget("params", 100_000), {}),
    "kd_hint": (Budget("params", 100_000), FEATURES),
    "kd_attention": (Budget("params", 100_000), {**FEATURES, "feature_weight": 10.0}),
    "arch_standard": (Budget("params", 20_000), {}),
    "arch_dwsep": (Budget("params", 20_000), {}),
    "arch_group": (Budget("params", 20_000), {"groups": 4}),
    "lowrank_svd": (Budget("params", 12_000), {}),
    "prune_l1_layer": (Budget("sparsity", 0.7), {"finetune_epochs": 1}),
    "prune_global_magnitude": (Budget("sparsity", 0.7), {}),
    "prune_iterative": (Budget("sparsity", 0.8), {"rounds": 2, "finetune_epochs": 1}),
    "prune_structured": (Budget("macs_speedup", 2), {"finetune_epochs": 1}),
    "prune_bn_slimming": (Budget("macs_speedup", 2), {"slimming_epochs": 1}),
    "quant_ptq_int8": (Budget("bits", 8), {"calibration_size": 64}),
    "pipeline_kd_quant": (Budget("bytes", 50_000), {"calibration_size": 64}),
    "quant_qat": (Budget("bits", 8), {"epochs": 1}),
    "quant_ptq_manual": (Budget("bits", 8), {"calibration_size": 64, "alphas": [0.95, 1.0]}),
    "quant_weight_int8": (Budget("bits", 8), {}),
    "quant_weight_fp16": (Budget("bits", 16), {}),
}
DEFAULT_BUDGETS = {"none": Budget("none", None), "params": Budget("params", 20_000), "sparsity": Budget("sparsity", 0.5),
                   "bits": Budget("bits", 8), "bytes": Budget("bytes", 50_000), "macs_speedup": Budget("macs_speedup", 2)}
STUDENT_FAMILIES = ("distill", "arch")  # given a fresh student, like `model: fashion_cnn` cases


def build_student(**overrides):
    return get_model("fashion_cnn", num_classes=10, in_channels=1, **{"image_size": 8, **overrides})


@pytest.mark.parametrize("name", [m for m in METHODS.list() if METHODS.get(m).cacheable])
def test_every_method_round_trips_through_the_cache(name, digits, digits_model, tmp_path):
    method = METHODS.get(name)
    budget, settings = ROUND_TRIP.get(name, (DEFAULT_BUDGETS[method.budget_kinds[0]], {}))
    ctx = Context(data=digits, teacher=digits_model, recipe=Recipe(epochs=1, lr=0.05, batch_size=64),
                  settings=dict(settings), build_model=build_student, seed=0)
    with deterministic(0):
        given = build_student() if method.family in STUDENT_FAMILIES or name == "scratch" else digits_model
        model = method(given, budget, ctx).eval()
    predictions = predict(model, digits.test, digits).argmax(1)
    key_dir = tmp_path / "case" / ("0" * 32)
    case_cache.store(key_dir, model, {"method_log": ctx.log}, predictions)

    def restore(state, quality):
        with deterministic(0):
            fresh = replace(ctx, settings=dict(settings), log=dict(quality["method_log"]))
            return method.restore(given, state, budget, fresh)

    loaded = case_cache.load(key_dir, restore)
    assert loaded is not None, f"{name}: the stored entry was not restored"
    restored, quality, stored = loaded
    assert restored is not model and type(restored).__name__ == type(model).__name__
    assert metrics.model_md5(restored) == metrics.model_md5(model)
    assert torch.equal(stored, predictions)
    assert torch.equal(predict(restored, digits.test, digits), predict(model, digits.test, digits))
    assert metrics.size_bytes(restored) == metrics.size_bytes(model)
    assert metrics.count_stored_params(restored) == metrics.count_stored_params(model)
