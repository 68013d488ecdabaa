import pytest

from slimbench.datasets import DATASETS
from slimbench.errors import UnknownNameError
from slimbench.methods import METHODS
from slimbench.models import MODELS, get_model
from slimbench.registry import Registry


def test_duplicate_name_raises():
    reg = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown model 'resnet9000'; valid models: .*cifar_resnet20"):
        get_model("resnet9000")
    with pytest.raises(UnknownNameError, match="valid datasets: cifar10, cifar10_jpeg, digits"):
        DATASETS.get("mnist")
    with pytest.raises(UnknownNameError, match="valid methods: .*kd_logits"):
        METHODS.get("magic")


def test_list_filters_with_wildcards():
    assert MODELS.list("cifar_resnet*") == ["cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
                                            "cifar_resnet8"]
    assert "cifar_resnet56" not in MODELS.list("cifar_resnet*", exclude="*56")


def test_every_family_has_a_method():
    assert {METHODS.get(n).family for n in METHODS.list()} >= {"baseline", "distill", "prune", "quant", "arch"}
