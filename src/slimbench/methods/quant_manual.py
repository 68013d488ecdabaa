"""Static int8 post-training quantization written from scratch (no torch.ao), as a reference to
check the library flow against and to study its knobs.

Scheme (the one torch.ao's x86 backend uses): BatchNorm folded into convolutions; int8
weights, symmetric, one scale per output channel; uint8 activations, asymmetric, one scale and
zero-point per tensor from the min/max seen on calibration images; int32 biases. Activation
ranges may be shrunk by ``alpha`` (clipping outliers), the value searched on the validation split.

Inference is simulated with integer values held in float tensors: convolutions and linear
layers accumulate (q_x - z_x) * q_w exactly, then requantize with the float multiplier
s_x * s_w / s_out, as fbgemm does. Exactness: float32 represents every integer below 2**24, so
a float32 conv of integers is exact while |x| * |w| * fan-in stays below that; the int8 weight
is split into two base-16 digits (w = 16 * high + low) whose convolutions each stay below it,
and are combined in float64. Additions rescale in float and requantize; shape ops and pooling
act on the integers and keep their input's qparams.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from ..budgets import Budget
from ..errors import ConfigError
from ..training import evaluate
from .base import Context, Method, register
from .quant import calibration_batches, calibration_size
from .quant_weight import quantize_per_channel

EXACT_FLOAT32 = 2 ** 24
RELUS = (F.relu, torch.relu)
ADDS = (operator.add, torch.add)
# Ops that act on the integers and keep their input's scale and zero-point.
KEEP_QPARAMS = (operator.getitem, torch.flatten, F.adaptive_avg_pool2d, F.max_pool2d, F.pad, "flatten",
                "view", "reshape", "contiguous")
KEEP_MODULES = (nn.Flatten, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class QParams:
    """Affine uint8 quantization: real = (q - zero_point) * scale, q in [0, qmax]."""

    scale: float
    zero_point: int
    qmax: int = 255

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(x.double() / self.scale) + self.zero_point, 0, self.qmax)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return ((q - self.zero_point) * self.scale).float()


def affine_qparams(low: float, high: float, qmax: int = 255, alpha: float = 1.0) -> QParams:
    """Scale and zero-point covering [alpha * low, alpha * high], widened to include 0 so that
    zero (padding, ReLU) is exact: scale = (high - low) / qmax, zero_point = round(-low / scale)."""
    low, high = min(alpha * low, 0.0), max(alpha * high, 0.0)
    scale = max((high - low) / qmax, torch.finfo(torch.float32).eps)
    return QParams(scale, int(min(max(round(-low / scale), 0), qmax)), qmax)


class RangeObserver:
    """Running min and max of everything it sees (the min-max observer)."""

    def __init__(self) -> None:
        self.low, self.high = float("inf"), float("-inf")

    def __call__(self, x: torch.Tensor) -> None:
        self.low, self.high = min(self.low, x.min().item()), max(self.high, x.max().item())


class IntLayer(nn.Module):
    """A conv or linear layer in integers: int8 per-channel weights, int32 bias, its output qparams.

    Exposes ``weight()``/``bias()`` (dequantized) and the conv/linear attributes, so the harness
    counts its parameters and MACs like any layer's.
    """

    def __init__(self, layer: nn.Module, out: QParams, relu: bool) -> None:
        super().__init__()
        q, scale = quantize_per_channel(layer.weight.detach())
        self.register_buffer("qweight", q)
        self.register_buffer("wscale", scale)
        self.register_buffer("fbias", layer.bias.detach().clone() if layer.bias is not None else None)
        self.register_buffer("out_qparams", torch.tensor([out.scale, out.zero_point, out.qmax], dtype=torch.float64))
        self.relu = relu
        self.conv = isinstance(layer, nn.Conv2d)
        attrs = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups") \
            if self.conv else ("in_features", "out_features")
        for attr in attrs:
            setattr(self, attr, getattr(layer, attr))

    @property
    def out(self) -> QParams:
        scale, zero_point, qmax = self.out_qparams.tolist()
        return QParams(scale, int(zero_point), int(qmax))

    def weight(self) -> torch.Tensor:
        return self.qweight.float() * self.wscale.view((-1,) + (1,) * (self.qweight.dim() - 1))

    def bias(self) -> torch.Tensor | None:
        return self.fbias

    def fan_in(self) -> int:
        return self.qweight[0].numel()

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups) if self.conv else x @ w.t()

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """sum (q_x - z_x) * q_w, exact (see the module docstring); x holds integers in [-255, 255]."""
        if 255 * 15 * self.fan_in() >= EXACT_FLOAT32:
            raise ConfigError(f"quant_ptq_manual: fan-in {self.fan_in()} is too large to simulate exactly; "
                              "fix: use quant_ptq_int8 for this model")
        high = torch.div(self.qweight, 16, rounding_mode="floor")
        low = self.qweight - 16 * high
        x = x.float()
        return 16 * self._linear_op(x, high.float()).double() + self._linear_op(x, low.float()).double()

    def forward(self, q: torch.Tensor, given: QParams) -> torch.Tensor:
        acc = self.accumulate(q - given.zero_point)
        in_scale = given.scale * self.wscale.double()  # the scale of the int32 accumulator, per channel
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        if self.fbias is not None:
            acc = acc + torch.round(self.fbias.double() / in_scale).view(shape)  # int32 bias
        out = self.out
        q = torch.round(acc * (in_scale / out.scale).view(shape)) + out.zero_point
        return torch.clamp(q, out.zero_point if self.relu else 0, out.qmax)


class IntegerModel(nn.Module):
    """The traced, BN-folded model run in simulated integer arithmetic; float in, float logits out."""

    def __init__(self, graph_module: fx.GraphModule, act_qparams: dict[str, QParams]) -> None:
        super().__init__()
        self.graph_module = graph_module
        # node name -> qparams of the tensors quantized outside layers; a buffer (rows in the order
        # of act_names), so that the state_dict holds every number the model computes with
        self.act_names = list(act_qparams)
        self.register_buffer("act_table", torch.tensor([[p.scale, p.zero_point, p.qmax] for p in act_qparams.values()],
                                                       dtype=torch.float64).reshape(-1, 3))

    @property
    def act_qparams(self) -> dict[str, QParams]:
        return {name: QParams(scale, int(zero_point), int(qmax))
                for name, (scale, zero_point, qmax) in zip(self.act_names, self.act_table.tolist())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, tuple[torch.Tensor, QParams]] = {}
        modules = dict(self.graph_module.named_modules())
        act_qparams = self.act_qparams
        for node in self.graph_module.graph.nodes:
            if node.op == "output":
                q, p = values[node.args[0].name]
                return p.dequantize(q)
            values[node.name] = self._run(node, x, values, modules, act_qparams)
        raise RuntimeError("graph without output")

    def _run(self, node: fx.Node, x: torch.Tensor, values: dict, modules: dict,
             act_qparams: dict[str, QParams]) -> tuple[torch.Tensor, QParams]:
        def arg(i: int):
            a = node.args[i]
            return values[a.name] if isinstance(a, fx.Node) else a

        if node.op == "placeholder":
            p = act_qparams[node.name]
            return p.quantize(x), p
        target = modules.get(node.target) if node.op == "call_module" else node.target
        if isinstance(target, IntLayer):
            q, p = arg(0)
            return target(q, p), target.out
        if _is_relu(node):
            q, p = arg(0)
            return (q if _fused_into(node) else torch.clamp_min(q, p.zero_point)), p
        if target in ADDS:
            (qa, pa), (qb, pb) = arg(0), arg(1)
            out = act_qparams[_output_point(node).name]
            total = pa.dequantize(qa).double() + pb.dequantize(qb).double()
            return torch.clamp(out.quantize(total), out.zero_point if _sole_user_is_relu(node) else 0, out.qmax), out
        if target in KEEP_QPARAMS or isinstance(target, KEEP_MODULES):
            return _keep_qparams(node, target, arg, values)
        raise ConfigError(f"quant_ptq_manual cannot run op {node.target!r} of node {node.name}; "
                          "fix: use quant_ptq_int8 for this model")


def _keep_qparams(node: fx.Node, target, arg, values: dict) -> tuple[torch.Tensor, QParams]:
    q, p = arg(0)
    rest = [values[a.name][0] if isinstance(a, fx.Node) else a for a in node.args[1:]]
    if target is F.pad:  # zero padding is the zero-point in the integer domain
        return F.pad(q, *rest, **{**node.kwargs, "value": float(p.zero_point)}), p
    if target is F.adaptive_avg_pool2d or isinstance(target, nn.AdaptiveAvgPool2d):
        size = rest[0] if rest else target.output_size
        return torch.round(F.adaptive_avg_pool2d(q, size)), p
    if isinstance(target, str):  # a tensor method: flatten, view, reshape...
        return getattr(q, target)(*rest, **node.kwargs), p
    if isinstance(target, nn.Module):
        return target(q), p
    return target(q, *rest, **node.kwargs), p


def _is_relu(node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), nn.ReLU)
    return node.target in RELUS or (node.op == "call_method" and node.target == "relu")


def _sole_user_is_relu(node: fx.Node) -> bool:
    users = list(node.users)
    return len(users) == 1 and _is_relu(users[0])


def _fused_into(relu: fx.Node) -> bool:
    """Whether this ReLU was applied already by the layer or add it alone follows."""
    producer = relu.args[0]
    return isinstance(producer, fx.Node) and _requantizes(producer) and _sole_user_is_relu(producer)


def _requantizes(node: fx.Node) -> bool:
    """Layers and additions: the ops that compute new values and quantize them to fresh qparams."""
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), (nn.Conv2d, nn.Linear, IntLayer))
    return node.op == "call_function" and node.target in ADDS


def _output_point(node: fx.Node) -> fx.Node:
    """Where a layer's or addition's output is quantized: after the ReLU it alone feeds, if any."""
    return next(iter(node.users)) if _sole_user_is_relu(node) else node


def quantization_points(gm: fx.GraphModule) -> list[fx.Node]:
    """Nodes whose output gets its own qparams: the input, and layers and adds (at their output point)."""
    return [node if node.op == "placeholder" else _output_point(node)
            for node in gm.graph.nodes if node.op == "placeholder" or _requantizes(node)]


class _RangeRecorder(fx.Interpreter):
    """Runs the float trace and feeds the named nodes' outputs to their observers."""

    def __init__(self, gm: fx.GraphModule, observers: dict[str, RangeObserver]) -> None:
        super().__init__(gm)
        self.observers = observers

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if node.name in self.observers:
            self.observers[node.name](out)
        return out


@torch.inference_mode()
def observe_ranges(gm: fx.GraphModule, points: list[fx.Node], batches) -> dict[str, RangeObserver]:
    """Min/max of every quantization point's float output over the calibration batches."""
    observers = {n.name: RangeObserver() for n in points}
    for x in batches:
        _RangeRecorder(gm, observers).run(x)
    return observers


def build_integer_model(fused: fx.GraphModule, observers: dict[str, RangeObserver], qmax: int,
                        alpha: float) -> IntegerModel:
    """A copy of the BN-folded trace with each conv/linear replaced by an IntLayer, all qparams fixed."""
    gm = copy.deepcopy(fused)
    qparams = {name: affine_qparams(o.low, o.high, qmax, alpha) for name, o in observers.items()}
    modules = dict(gm.named_modules())
    in_layers = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            point = _output_point(node)
            gm.set_submodule(node.target, IntLayer(modules[node.target], qparams[point.name], point is not node))
            in_layers.add(point.name)
    return IntegerModel(gm, {name: p for name, p in qparams.items() if name not in in_layers})


@dataclass(frozen=True)
class ManualPTQSettings:
    calibration_size: int | str = 1000  # training images, or "all"
    alphas: list[float] = field(default_factory=lambda: [1.0])  # activation-range factors searched on val
    activation_qmax: int = 255  # 127 or 255


@register
class ManualPTQ(Method):
    """From-scratch static W8A8 PTQ; ``alphas`` lists the activation-range factors to search on
    the validation split (one value: no search)."""

    name = "quant_ptq_manual"
    family = "quant"
    plots = ("calibration_curves",)
    budget_kinds = ("bits", "bytes")
    settings_type = ManualPTQSettings
    stored_bits = 8

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        """Its ranges come from min-max observers (``RangeObserver``), scaled by the chosen alpha."""
        return f"{self.name} (minmax)"


    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        alphas = [float(a) for a in ctx.setting("alphas")]
        qmax = int(ctx.setting("activation_qmax"))
        if not alphas or not all(0 < a <= 1 for a in alphas) or qmax not in (127, 255):
            raise ConfigError(f"quant_ptq_manual needs alphas in (0, 1] and activation_qmax 127 or 255, got "
                              f"{alphas} and {qmax}; fix the case's settings")
        gm = fuse(model.eval())
        points = quantization_points(gm)
        observers = observe_ranges(gm, points, calibration_batches(ctx, calibration_size(ctx)))
        candidates = {a: build_integer_model(gm, observers, qmax, a) for a in alphas}
        if len(alphas) == 1:
            return candidates[alphas[0]]
        val = {a: evaluate(m, ctx.data.val, ctx.data) for a, m in candidates.items()}
        best = max(alphas, key=lambda a: (val[a], a))
        ctx.log.update(alpha=best, val_top1_per_alpha={f"{a:g}": round(v, 2) for a, v in val.items()})
        return candidates[best]

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        """The BN-folded trace with an IntLayer per conv/linear layer, placeholder qparams: every
        number it computes with (int8 weights, scales, zero-points) is a buffer the state sets."""
        gm = fuse(model.eval())
        observers = {node.name: RangeObserver() for node in quantization_points(gm)}
        for o in observers.values():
            o.low, o.high = 0.0, 1.0
        return build_integer_model(gm, observers, 255, 1.0)
