import pytest
import torch

from slimbench.methods.arch import width_for_budget
from slimbench.models import MODELS, count_nn_parameters, get_model


@pytest.mark.parametrize("name,expected", [
    ("vgg8", 2_168_203),
    ("vgg8_dwsep", 256_779),
    ("resnet_like_student", 99_060),
    ("fashion_cnn", 95_386),
])
def test_course_architectures_have_their_published_parameter_counts(name, expected):
    assert count_nn_parameters(get_model(name)) == expected


def test_cifar_resnets_match_the_public_checkpoint_sizes():
    # He et al. / akamaster: 0.27M, 0.46M, 0.66M, 0.85M
    counts = {d: count_nn_parameters(get_model(f"cifar_resnet{d}")) for d in (20, 32, 44, 56)}
    assert counts == {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018}
    # ResNet-8 (one block per stage): the under-100k student of the distillation studies
    assert count_nn_parameters(get_model("cifar_resnet8", in_channels=1)) == 75_002


INPUTS = {"fashion_cnn": (1, 28), "resnet_like_student": (3, 64)}


@pytest.mark.parametrize("name", MODELS.list(exclude="resnet50_small"))
def test_every_model_runs_on_its_input_and_gives_class_logits(name):
    channels, size = INPUTS.get(name, (3, 32))
    kwargs = {"image_size": size} if name == "fashion_cnn" else {}
    model = get_model(name, num_classes=7, in_channels=channels, **kwargs).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("groups", [2, 4])
def test_group_convolution_variants_have_fewer_parameters(groups):
    dense = count_nn_parameters(get_model("vgg8"))
    grouped = get_model("vgg8", conv="group", groups=groups)
    convs = [m for m in grouped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.groups == groups for c in convs[1:]) and convs[0].groups == 1
    assert count_nn_parameters(grouped) < dense
    assert grouped.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 11)


def test_unknown_conv_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown conv kind 'sparse'; valid kinds: standard, dwsep, group"):
        get_model("vgg8", conv="sparse")


@pytest.mark.parametrize("budget", [20_000, 60_000, 256_779])
def test_width_sizing_meets_the_budget_and_is_tight(budget):
    build = lambda w: get_model("vgg8", conv="dwsep", width=w)  # noqa: E731
    width = width_for_budget(build, budget)
    assert count_nn_parameters(build(width)) <= budget
    assert count_nn_parameters(build(width * 1.1)) > budget * 0.9  # not needlessly small


def test_width_sizing_reports_an_impossible_budget():
    assert width_for_budget(lambda w: get_model("vgg8", conv="dwsep", width=w), 100) is None
