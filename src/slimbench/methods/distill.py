"""Knowledge distillation: logits (Hinton), hints (FitNets) and attention transfer (Zagoruyko).

Every method trains the case's student from scratch against the case's teacher. Intermediate
features are read with forward hooks on module paths (``layer2``, ``features.6``), so any
registered teacher and student pair works without rewriting either network.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..budgets import Budget
from ..errors import ConfigError
from ..training import DeviceClock, device, fit, normalize, predict
from .base import Context, Method, register


def kd_logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's.
    """
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): mean over channels of squared activations, flattened, L2-normalised."""
    return F.normalize(features.pow(2).mean(1).flatten(1))


def attention_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two attention maps (student resized to the teacher's grid)."""
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        student_features = F.adaptive_avg_pool2d(student_features, teacher_features.shape[-2:])
    return (attention_map(student_features) - attention_map(teacher_features)).pow(2).mean()


def hint_loss(projected: torch.Tensor, teacher_features: torch.Tensor, kind: str) -> torch.Tensor:
    """FitNets hint term between regressed student features and teacher features."""
    if kind == "mse":
        return F.mse_loss(projected, teacher_features)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(projected, teacher_features)
    raise ConfigError(f"unknown hint loss {kind!r}; valid: mse, smooth_l1")


def feature_weight(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the feature term at ``epoch`` (1-based): constant, or growing as (epoch/epochs)^2."""
    if schedule == "constant":
        return 1.0
    if schedule == "quadratic":
        return (epoch / epochs) ** 2
    raise ConfigError(f"unknown feature schedule {schedule!r}; valid: constant, quadratic")


class FeatureTaps:
    """Forward hooks that keep the latest output of named submodules (removed by ``close``)."""

    def __init__(self, model: nn.Module, paths: Sequence[str], owner: str) -> None:
        names = dict(model.named_modules())
        unknown = [p for p in paths if p not in names]
        if unknown:
            valid = ", ".join(n for n in names if n)
            raise ConfigError(f"{owner} has no module {unknown[0]!r}; fix the case's layers setting; "
                              f"valid module paths: {valid}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [names[p].register_forward_hook(self._keep(p)) for p in paths]
        self.paths = list(paths)

    def _keep(self, path: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs[path] = output
        return hook

    def __getitem__(self, path: str) -> torch.Tensor:
        return self.outputs[path]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.outputs.clear()


@contextmanager
def taps(model: nn.Module, paths: Sequence[str], owner: str) -> Iterator[FeatureTaps]:
    tap = FeatureTaps(model, paths, owner)
    try:
        yield tap
    finally:
        tap.close()


class TeacherSignal:
    """The frozen teacher's outputs for a training batch, and the time spent computing them.

    Without augmentation the teacher sees the same image every epoch, so its logits are
    computed once for the whole train split and looked up by position (``cached=True``).
    """

    def __init__(self, teacher: nn.Module, ctx: Context, cache_logits: bool) -> None:
        self.teacher = teacher.eval()
        self.clock = DeviceClock()  # device time of the teacher's forwards, read once at the end
        self.cached = None
        if cache_logits and ctx.recipe.augment == "none":
            with self.clock.timed(device()):
                self.cached = predict(teacher, ctx.data.train, ctx.data).to(device())

    @property
    def seconds(self) -> float:
        return self.clock.seconds

    def logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[idx.to(self.cached.device)]
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.clock.timed(x.device), torch.inference_mode():
            out = self.teacher(x)
        return out.clone()  # an inference tensor cannot enter autograd


class StudentWithRegressors(nn.Module):
    """Trains the student together with the 1x1 regressors of its hint terms; forward = student."""

    def __init__(self, student: nn.Module, regressors: nn.ModuleList) -> None:
        super().__init__()
        self.student = student
        self.regressors = regressors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def layer_pairs(ctx: Context) -> list[tuple[str, str]]:
    pairs = ctx.setting("layers")
    if not pairs or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise ConfigError("setting `layers` must list [student_module, teacher_module] pairs, "
                          "e.g. [[features.6, layer2]]; see `named_modules()` of both models")
    return [(str(s), str(t)) for s, t in pairs]


@dataclass(frozen=True)
class KDSettings:
    """Logit distillation: softmax temperature and the weight of the soft term."""

    temperature: float = 4.0
    alpha: float = 0.9


@dataclass(frozen=True)
class KDLogitsSettings(KDSettings):
    cache_teacher_logits: bool = True  # teacher logits computed once when the recipe has no augmentation


@dataclass(frozen=True)
class FeatureKDSettings(KDSettings):
    """Logit distillation plus a feature term on [student_module, teacher_module] ``layers`` pairs."""

    layers: list | None = None
    feature_weight: float = 1.0
    feature_schedule: str = "quadratic"


@dataclass(frozen=True)
class HintSettings(FeatureKDSettings):
    hint_loss: str = "smooth_l1"


@dataclass(frozen=True)
class AttentionSettings(FeatureKDSettings):
    feature_weight: float = 1000.0
    feature_schedule: str = "constant"


class Distiller(Method):
    """Shared training loop: the student learns from the teacher's logits plus optional feature terms."""

    family = "distill"
    budget_kinds = ("params", "none")
    needs_teacher = True
    keeps_architecture = True
    uses_features = False

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        dev = device()
        teacher = ctx.teacher.to(dev)
        pairs = layer_pairs(ctx) if self.uses_features else []
        signal = TeacherSignal(teacher, ctx, cache_logits=not pairs and bool(ctx.setting("cache_teacher_logits")))
        try:
            with taps(model, [s for s, _ in pairs], "the student") as s_taps, \
                    taps(teacher, [t for _, t in pairs], "the teacher") as t_taps:
                trainee = self.trainee(model, teacher, pairs, s_taps, t_taps, ctx)
                weight = {"value": 0.0}  # stays 0 without layer pairs (kd_logits has no feature settings)
                schedule = str(ctx.setting("feature_schedule")) if pairs else None

                def on_epoch(epoch: int, epochs: int) -> None:
                    if pairs:
                        weight["value"] = float(ctx.setting("feature_weight")) * feature_weight(schedule, epoch, epochs)

                def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                    t_logits = signal.logits(x, idx)
                    total = kd_logits_loss(logits, t_logits, y, float(ctx.setting("temperature")),
                                           float(ctx.setting("alpha")))
                    if pairs and weight["value"] > 0:
                        total = total + weight["value"] * self.feature_loss(trainee, pairs, s_taps, t_taps, ctx)
                    return total

                start = time.perf_counter()
                result = fit(trainee, ctx.data, ctx.recipe, loss_fn=loss, desc=self.name, on_epoch=on_epoch,
                             resume_path=ctx.resume_path(self.name))
                seconds = time.perf_counter() - start
        finally:
            ctx.teacher.to("cpu")
        ctx.log.update(best_epoch=result.best_epoch, teacher_seconds=round(signal.seconds, 1),
                       teacher_share=round(signal.seconds / max(seconds, 1e-9), 3),
                       teacher_logits_cached=signal.cached is not None)
        return trainee.student if isinstance(trainee, StudentWithRegressors) else trainee

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        return f"{self.name} (T={settings['temperature']:g}, alpha={settings['alpha']:g})"

    def trainee(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str]],
                s_taps: FeatureTaps, t_taps: FeatureTaps, ctx: Context) -> nn.Module:
        return student

    def feature_loss(self, trainee: nn.Module, pairs: list[tuple[str, str]], s_taps: FeatureTaps,
                     t_taps: FeatureTaps, ctx: Context) -> torch.Tensor:
        raise NotImplementedError


@register
class KDLogits(Distiller):
    """Train the given student from scratch against the teacher's softened logits."""

    name = "kd_logits"
    settings_type = KDLogitsSettings


@register
class KDHint(Distiller):
    """FitNets-style hints on top of logit KD: a learned 1x1 regressor maps each tapped student
    feature map to the teacher's channels (resized to its grid), penalised by smooth-L1 or MSE."""

    name = "kd_hint"
    settings_type = HintSettings
    uses_features = True

    def trainee(self, student, teacher, pairs, s_taps, t_taps, ctx):
        x = normalize(ctx.data.train.images[:2], ctx.data.mean, ctx.data.std)
        dev = next(teacher.parameters()).device
        with torch.no_grad():
            student.eval()(x)
            teacher.eval()(x.to(dev))
        regressors = nn.ModuleList(nn.Conv2d(s_taps[s].shape[1], t_taps[t].shape[1], 1, bias=False)
                                   for s, t in pairs)
        return StudentWithRegressors(student, regressors)

    def feature_loss(self, trainee, pairs, s_taps, t_taps, ctx):
        kind = str(ctx.setting("hint_loss"))
        total = 0.0
        for (s, t), regressor in zip(pairs, trainee.regressors):
            projected = regressor(s_taps[s])
            if projected.shape[-2:] != t_taps[t].shape[-2:]:
                projected = F.interpolate(projected, size=t_taps[t].shape[-2:], mode="bilinear", align_corners=False)
            total = total + hint_loss(projected, t_taps[t].clone(), kind)
        return total


@register
class KDAttention(Distiller):
    """Attention transfer on top of logit KD: match the students' spatial attention maps to the
    teacher's at each layer pair (beta/2 * sum of mean squared differences, beta = feature_weight)."""

    name = "kd_attention"
    settings_type = AttentionSettings
    uses_features = True

    def feature_loss(self, trainee, pairs, s_taps, t_taps, ctx):
        return sum(attention_loss(s_taps[s], t_taps[t].clone()) for s, t in pairs) / 2

