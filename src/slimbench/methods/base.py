"""The method interface: take a model, a budget and a context; return a new model."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..budgets import Budget
from ..datasets import DataSplits
from ..errors import BudgetError, ConfigError
from ..registry import Registry
from ..training import Recipe

FAMILIES = ("baseline", "distill", "prune", "quant", "arch", "lowrank", "pipeline")


@dataclass
class Context:
    """Everything a method may use besides the model and the budget.

    Attributes:
        data: the case's splits (train for training/calibration, val for selection).
        teacher: the case's teacher in eval mode, or None.
        recipe: training recipe of the case (epochs, lr, ...).
        settings: method-specific settings from the case (temperature, calibration size, ...).
        build_model: builds the case's architecture with keyword overrides (width, conv...).
        seed: the case's seed.
        resume_dir: where training state is saved after every epoch (None: no resuming).
    """

    data: DataSplits
    teacher: nn.Module | None
    recipe: Recipe
    settings: dict[str, Any]
    build_model: Callable[..., nn.Module]
    seed: int = 0
    log: dict[str, Any] = field(default_factory=dict)  # method notes that end up in the row
    resume_dir: Path | None = None

    def setting(self, key: str, default: Any) -> Any:
        return self.settings.get(key, default)

    def resume_path(self, tag: str) -> Path | None:
        """Per-epoch training state file of one training run of the method (``fit(resume_path=...)``)."""
        return None if self.resume_dir is None else self.resume_dir / f"{tag}.pt"


class Method(ABC):
    """A compression method. Subclasses set ``name``, ``family``, ``budget_kinds``, ``settings``
    (accepted keys with defaults) and implement ``compress``; those whose returned module is not
    the input's architecture also override ``structure``, so that the case cache can rebuild the
    model from its state_dict (``restore``)."""

    name: ClassVar[str]
    family: ClassVar[str]
    budget_kinds: ClassVar[tuple[str, ...]]
    settings: ClassVar[dict[str, Any]] = {}
    needs_teacher: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True  # False where ``restore`` cannot rebuild the returned model

    def __call__(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        """Validate, deep-copy the input (methods never mutate what they are given), compress."""
        if budget.kind not in self.budget_kinds:
            raise BudgetError(f"method {self.name} takes budget kinds {', '.join(self.budget_kinds)}, "
                              f"not {budget.kind!r}; fix the case's budget in params.yaml")
        unknown = set(ctx.settings) - set(self.settings)
        if unknown:
            raise ConfigError(f"method {self.name} has no settings {sorted(unknown)}; valid: {sorted(self.settings)}")
        ctx.settings = {**self.settings, **ctx.settings}
        if self.needs_teacher and ctx.teacher is None:
            raise ConfigError(f"method {self.name} needs a teacher; set `teacher:` for the case's dataset")
        return self.compress(copy.deepcopy(model), budget, ctx)

    @abstractmethod
    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        """Return the compressed model; ``model`` is already a private copy."""

    def restore(self, given: nn.Module, state: dict[str, Any], budget: Budget, ctx: Context) -> nn.Module:
        """The model ``compress`` returned for ``given``, rebuilt from its state_dict without training.

        ``given`` is the input compress got (built the same way, under the same seed) and ``ctx``
        the case's context with ``ctx.log`` holding what compress logged. ``structure`` builds the
        module, then ``state`` is loaded strictly: a missing, extra or misshapen tensor raises.
        """
        ctx.settings = {**self.settings, **ctx.settings}
        model = self.structure(copy.deepcopy(given), state, budget, ctx)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def structure(self, model: nn.Module, state: dict[str, Any], budget: Budget, ctx: Context) -> nn.Module:
        """The module ``compress`` returns, untrained (its tensors are overwritten by ``state``), built
        from ``model`` (a private copy of the input) and, where compress chose shapes (ranks,
        widths, channels), from ``state``'s tensor shapes or ``ctx.log``. Default: the input's own
        architecture, for methods that keep it (reference, scratch, distillation, masked pruning)."""
        return model

    def infeasible(self, given: nn.Module, budget: Budget, ctx: Context) -> str | None:
        """Why ``budget`` cannot be met from ``given`` (one clause, e.g. "the smallest width (0.05)
        has 1,234 params"), known cheaply before anything trains; None when it may be met.
        ``ctx.settings`` holds the method's defaults merged with the case's settings."""
        return None


def params_over_budget(given: nn.Module, budget: Budget) -> str | None:
    """A params budget that a method keeping ``given``'s architecture (a fixed student) cannot meet."""
    from ..metrics import count_params

    params = count_params(given)
    if budget.kind == "params" and params > budget.value:
        return f"the model it trains keeps its architecture, which has {params:,} params"
    return None


def storage_over_budget(name: str, given: nn.Module, budget: Budget, bits: int) -> str | None:
    """A bits budget below the ``bits`` a quantization method stores its weights in, or a bytes
    budget below what ``given``'s conv/linear weights take at ``bits`` (a lower bound of the file)."""
    if budget.kind == "bits" and budget.value < bits:
        return f"{name} stores {bits}-bit weights"
    if budget.kind == "bytes":
        weights = sum(m.weight.numel() for m in given.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        if weights * bits // 8 > budget.value:
            return f"its {weights:,} conv/linear weights alone take {weights * bits // 8:,} bytes at {bits} bits"
    return None


METHODS: Registry[Method] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}.family {cls.family!r} is not one of {FAMILIES}")
    METHODS.register(cls.name)(cls())
    return cls
