"""Method settings: one dataclass of defaults per method, effective settings, and the labels a
method gives its rows (plot legends)."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from slimbench import harness
from slimbench.errors import ConfigError
from slimbench.methods import METHODS, Context, Method
from slimbench.methods.base import NoSettings
from slimbench.plots import row_label

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def defaults_of(cls: type) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", METHODS.list())
def test_every_methods_defaults_come_from_its_settings_dataclass(name):
    method = METHODS.get(name)
    assert dataclasses.is_dataclass(method.settings_type)
    assert method.settings == defaults_of(method.settings_type)
    assert method.effective_settings({}) == method.settings
    assert method.label(method.settings).startswith(name)
    assert set(method.row_metrics) <= set(harness.ROW_METRICS)


def test_the_defaults_are_the_documented_ones():
    assert METHODS.get("quant_ptq_int8").settings == {"observer": "histogram", "calibration_size": 1000}
    assert METHODS.get("prune_iterative").settings == {"rounds": 4, "finetune_epochs": 1, "schedule": "cubic",
                                                       "final_epochs": 0, "distill_alpha": 0.0,
                                                       "distill_temperature": 4.0, "bn_filter_fraction": 0.0}
    assert METHODS.get("kd_hint").settings["feature_weight"] == 1.0
    assert METHODS.get("kd_attention").settings["feature_weight"] == 1000.0
    assert METHODS.get("reference").settings == {} and METHODS.get("reference").settings_type is NoSettings


def test_the_defaults_cannot_be_changed_through_settings():
    manual = METHODS.get("quant_ptq_manual")
    manual.settings["alphas"].append(0.5)
    manual.settings["calibration_size"] = 1
    assert manual.settings == {"calibration_size": 1000, "alphas": [1.0], "activation_qmax": 255}


def test_effective_settings_merge_the_case_over_the_defaults():
    case = {"calibration_size": 64}
    assert METHODS.get("quant_ptq_int8").effective_settings(case) == {"observer": "histogram", "calibration_size": 64}
    assert case == {"calibration_size": 64}  # the case's own settings are left as they are
    assert METHODS.get("quant_ptq_int8").effective_settings({"calibration_size": "all"})["calibration_size"] == "all"
    assert METHODS.get("kd_logits").effective_settings({"temperature": 4})["temperature"] == 4  # ints pass as floats
    assert METHODS.get("prune_structured").effective_settings({"round_to": None})["round_to"] is None


def test_unknown_settings_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"^method kd_logits has no settings \['temprature'\]; "
                                          r"valid: \['alpha', 'cache_teacher_logits', 'temperature'\]$"):
        METHODS.get("kd_logits").effective_settings({"temprature": 4.0})
    with pytest.raises(ConfigError, match=r"has no settings \['observer'\]"):
        METHODS.get("quant_ptq_manual").effective_settings({"observer": "histogram"})


@pytest.mark.parametrize("name,settings,message", [
    ("quant_ptq_int8", {"calibration_size": 1.5}, "setting calibration_size of method quant_ptq_int8 must be int or str, "
                                                  "got 1.5 (float); fix the case's settings"),
    ("prune_iterative", {"rounds": "4"}, "setting rounds of method prune_iterative must be int, got '4' (str)"),
    ("prune_iterative", {"finetune_epochs": True}, "must be int, got True (bool)"),
    ("quant_weight_int8", {"fold_bn": 1}, "setting fold_bn of method quant_weight_int8 must be bool, got 1 (int)"),
    ("prune_bn_slimming", {"l1": "1e-4"}, "must be float, got '1e-4' (str); fix the case's settings "
                                          "(write a float with a dot: 1.0e-4, not 1e-4)"),
    ("quant_ptq_manual", {"alphas": 0.9}, "setting alphas of method quant_ptq_manual must be list, got 0.9"),
])
def test_settings_of_the_wrong_type_are_refused(name, settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        METHODS.get(name).effective_settings(settings)


def test_every_case_in_params_yaml_has_valid_settings():
    seen = 0

    def walk(node):
        nonlocal seen
        if isinstance(node, dict):
            if node.get("method") in METHODS:
                METHODS.get(node["method"]).effective_settings(node.get("settings") or {})
                seen += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(PARAMS.read_text()))
    assert seen > 20


def test_a_method_declares_a_settings_dataclass_not_a_dict():
    with pytest.raises(TypeError, match="sets `settings`; declare a settings dataclass as `settings_type`"):
        type("Legacy", (Method,), {"settings": {"a": 1}})
    with pytest.raises(TypeError, match="settings_type must be a dataclass"):
        type("NotADataclass", (Method,), {"settings_type": dict})


def test_a_setting_without_a_default_must_be_in_the_effective_settings():
    ctx = Context(data=None, teacher=None, recipe=None, settings={"rounds": 4}, build_model=lambda **kw: None)
    assert ctx.setting("rounds") == 4 and ctx.setting("schedule", "linear") == "linear"
    with pytest.raises(KeyError, match="Method.effective_settings"):
        ctx.setting("schedule")


@pytest.mark.parametrize("row,label", [
    # a row without an explicit observer was labelled "minmax"; the method's default is histogram
    ({"method": "quant_ptq_int8", "settings": {"calibration_size": 100}}, "quant_ptq_int8 (histogram)"),
    ({"method": "quant_ptq_int8", "settings": {"observer": "minmax"}}, "quant_ptq_int8 (minmax)"),
    ({"method": "quant_ptq_manual", "settings": {"alphas": [1.0]}}, "quant_ptq_manual (minmax)"),
    # prune_iterative fell back to 0 epochs; its default is 1 per round
    ({"method": "prune_iterative", "settings": {}}, "prune_iterative (4 rounds x 1 ep)"),
    ({"method": "prune_iterative", "settings": {"rounds": 6, "finetune_epochs": 1, "final_epochs": 6}},
     "prune_iterative (6 rounds x 1 ep + 6 ep)"),
    ({"method": "prune_iterative", "settings": {"rounds": 1}, "tag": "chain"},
     "prune_iterative (from the previous rate, 1 ep each)"),
    ({"method": "prune_iterative", "settings": {"rounds": 1, "finetune_epochs": 2}, "tag": "chain"},
     "prune_iterative (from the previous rate, 2 ep each)"),
    ({"method": "prune_global_magnitude", "settings": {}}, "prune_global_magnitude (one-shot)"),
    ({"method": "prune_l1_layer", "settings": {"finetune_epochs": 2}}, "prune_l1_layer (2 ep fine-tune)"),
    # rows measured since carry effective_settings, which win over the defaults of today
    ({"method": "prune_iterative", "settings": {}, "effective_settings": {"rounds": 4, "finetune_epochs": 3,
                                                                          "schedule": "cubic", "final_epochs": 0}},
     "prune_iterative (4 rounds x 3 ep)"),
    ({"method": "retired_method", "settings": {"x": 1}}, "retired_method"),
])
def test_rows_are_labelled_from_their_methods_real_defaults(row, label):
    assert row_label(row) == label
