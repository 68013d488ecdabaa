"""Model registry. Every builder takes ``num_classes`` and ``in_channels`` (and, where the
architecture has one, ``width``), so any registered model fits any registered dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry
from .cifar_resnet import CifarResNet
from .cnn import VGG8, FashionCNN
from .mobile import mobilenet_v1, resnet_like_student
from .torchvision_resnet import small_input_resnet

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
list_models = MODELS.list


def get_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model; unknown names list the valid ones."""
    return MODELS.get(name)(**config)


def _register_cifar_resnet(depth: int) -> None:
    MODELS.register(f"cifar_resnet{depth}")(lambda **kw: CifarResNet(depth, **kw))


for _depth in (8, 20, 32, 44, 56):
    _register_cifar_resnet(_depth)


@MODELS.register("vgg8")
def vgg8(**kw: Any) -> nn.Module:
    return VGG8(**kw)


@MODELS.register("vgg8_dwsep")
def vgg8_dwsep(**kw: Any) -> nn.Module:
    return VGG8(conv="dwsep", **kw)


@MODELS.register("fashion_cnn")
def fashion_cnn(**kw: Any) -> nn.Module:
    return FashionCNN(**kw)


MODELS.register("mobilenet_v1")(mobilenet_v1)
MODELS.register("resnet_like_student")(resnet_like_student)


@MODELS.register("resnet18_small")
def resnet18_small(**kw: Any) -> nn.Module:
    return small_input_resnet(18, **kw)


@MODELS.register("resnet50_small")
def resnet50_small(**kw: Any) -> nn.Module:
    return small_input_resnet(50, **kw)


def count_nn_parameters(model: nn.Module) -> int:
    """Elements of the model's ``nn.Parameter`` tensors (``model.parameters()``): a float model's
    size; quantized layers' packed weights are not parameters (``metrics.count_stored_params`` counts them)."""
    return sum(p.numel() for p in model.parameters())


def build_model_for(model: str, data: Any, kwargs: dict | None = None) -> nn.Module:
    """Instantiate a registered model with a dataset's classes and input channels."""
    return get_model(model, num_classes=data.num_classes, in_channels=data.in_channels, **(kwargs or {}))
