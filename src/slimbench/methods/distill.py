"""Knowledge distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..budgets import Budget
from ..training import LossFn, fit
from .base import Context, Method, register


def kd_logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's.
    """
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def teacher_guided(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """A training loss that runs the frozen teacher on the same (augmented) batch."""
    teacher.eval()

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            t_logits = teacher(x)
        return kd_logits_loss(logits, t_logits.clone(), y, temperature, alpha)

    return loss


@register
class KDLogits(Method):
    """Train the given student from scratch against the teacher's softened logits."""

    name = "kd_logits"
    family = "distill"
    budget_kinds = ("params", "none")
    settings = {"temperature": 4.0, "alpha": 0.9}
    needs_teacher = True

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        loss = teacher_guided(ctx.teacher, float(ctx.setting("temperature", 4.0)), float(ctx.setting("alpha", 0.9)))
        result = fit(model, ctx.data, ctx.recipe, loss_fn=loss, desc=self.name)
        ctx.log.update(best_epoch=result.best_epoch)
        return model
