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
    (accepted keys with defaults) and implement ``compress``."""

    name: ClassVar[str]
    family: ClassVar[str]
    budget_kinds: ClassVar[tuple[str, ...]]
    settings: ClassVar[dict[str, Any]] = {}
    needs_teacher: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True  # False where the returned model cannot be pickled and reloaded

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


METHODS: Registry[Method] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}.family {cls.family!r} is not one of {FAMILIES}")
    METHODS.register(cls.name)(cls())
    return cls
