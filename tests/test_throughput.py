"""`slimbench throughput`: rows for every setup and variant, recorded per device, rendered as tables."""

from __future__ import annotations

import json

import torch

from slimbench import throughput
from slimbench.throughput import Setup


def test_a_throughput_run_times_both_trainers_and_records_them_per_device(digits, digits_model, tmp_path):
    setups = (Setup("cifar_resnet8", False), Setup("cifar_resnet8", True))
    entry = throughput.run(digits, digits_model, torch.device("cpu"), batch_size=64, rounds=3, steps=2, warmup=1,
                           setups=setups)
    rows = entry["rows"]
    assert [(r["teacher"], r["variant"]) for r in rows] == [(None, "legacy"), (None, "current"),
                                                            ("cifar_resnet56", "legacy"), ("cifar_resnet56", "current")]
    for r in rows:
        assert r["images_per_s"] > 0 and len(r["samples"]) == 3
        assert r["images_per_s_iqr"][0] <= r["images_per_s"] <= r["images_per_s_iqr"][1]
    for r in rows[1::2]:
        low, high = r["vs_legacy_ci95"]
        assert low <= high and r["vs_legacy"] > 0
    assert entry["machine"]["device"] == "cpu" and entry["machine"]["torch"] == torch.__version__

    out = tmp_path / "throughput.json"
    throughput.record(out, entry)
    throughput.record(out, {**entry, "machine": {**entry["machine"], "device": "cuda", "name": "Some GPU"}})
    doc = json.loads(out.read_text())
    assert sorted(doc["devices"]) == [f"cpu: {entry['machine']['name']}", "cuda: Some GPU"]
    table = out.with_suffix(".md").read_text()
    assert table.count("| cifar_resnet8 | cifar_resnet56 | current |") == 2 and "**Some GPU**" in table


def test_a_variant_that_cannot_run_is_a_row_with_its_reason(digits, monkeypatch):
    real = throughput.variant

    def broken(name, *args):
        if name == "current":
            raise RuntimeError("no compiler here\nsecond line")
        return real(name, *args)
    monkeypatch.setattr(throughput, "variant", broken)
    rows = throughput.measure(Setup("cifar_resnet8", False), digits, None, torch.device("cpu"), 32, 2, 1, 1)
    assert rows[1] == {"student": "cifar_resnet8", "teacher": None, "variant": "current", "batch_size": 32,
                       "images_per_s": None, "error": "RuntimeError: no compiler here"}
    assert rows[0]["images_per_s"] > 0
