"""The method interface: take a model, a budget and a context; return a new model."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
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


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class NoSettings:
    """The settings dataclass of a method that takes none."""


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits the type hint ``hint``; only cheap checks (scalars, None, lists,
    unions of them): other hints accept anything. ints pass as floats, bools pass only as bools."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is list or typing.get_origin(hint) is list:
        return isinstance(value, (list, tuple))
    return True


def _type_text(hint: Any) -> str:
    return " or ".join(_type_text(a) for a in typing.get_args(hint)) if isinstance(hint, types.UnionType) \
        else "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


class _SettingsDefaults:
    """``Method.settings``: the accepted keys with their defaults, read from the class's
    ``settings_type`` dataclass (a fresh dict on every read: the defaults cannot be changed)."""

    def __get__(self, instance: Any, owner: type) -> dict[str, Any]:
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(owner.settings_type)}


@dataclass
class Context:
    """Everything a method may use besides the model and the budget.

    Attributes:
        data: the case's splits (train for training/calibration, val for selection).
        teacher: the case's teacher in eval mode, or None.
        recipe: training recipe of the case (epochs, lr, ...).
        settings: the method's effective settings: its defaults (``Method.settings``) merged with
            the case's (temperature, calibration size, ...); ``Method.__call__`` merges them.
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

    def setting(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """One setting; its default comes from the method's settings dataclass (already merged
        into ``settings``), so ``default`` is only for code that runs outside a method."""
        if key in self.settings:
            return self.settings[key]
        if default is _NO_DEFAULT:
            raise KeyError(f"setting {key!r} is not in ctx.settings {sorted(self.settings)}; a method reads its "
                           "effective settings (Method.effective_settings: defaults merged with the case's)")
        return default

    def resume_path(self, tag: str) -> Path | None:
        """Per-epoch training state file of one training run of the method (``fit(resume_path=...)``)."""
        return None if self.resume_dir is None else self.resume_dir / f"{tag}.pt"


class Method(ABC):
    """A compression method. Subclasses set ``name``, ``family``, ``budget_kinds``,
    ``settings_type`` (a dataclass: the accepted settings, their types and defaults, in one
    place) and implement ``compress``; those whose returned module is not the input's
    architecture also override ``structure``, so that the case cache can rebuild the model from
    its state_dict (``restore``). ``label`` names a row in plot legends from its settings;
    ``row_metrics`` names the extra per-row metrics the harness measures for the method's rows.

    ``settings`` is derived: a dict of the dataclass's defaults (keys the cases may set)."""

    name: ClassVar[str]
    family: ClassVar[str]
    budget_kinds: ClassVar[tuple[str, ...]]
    settings_type: ClassVar[type] = NoSettings
    settings: ClassVar[dict[str, Any]] = _SettingsDefaults()  # type: ignore[assignment]
    row_metrics: ClassVar[tuple[str, ...]] = ()  # names in harness.ROW_METRICS, e.g. ("per_layer",)
    plots: ClassVar[tuple[str, ...]] = ()  # the leaderboard plots its rows are drawn in (plots.py)
    is_reference: ClassVar[bool] = False  # its rows are the uncompressed reference (a plot's baseline)
    needs_teacher: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True  # False where ``restore`` cannot rebuild the returned model
    # What feasibility.py checks a budget against before training (no measuring code here):
    keeps_architecture: ClassVar[bool] = False  # True: returns the input's architecture trained (a fixed student)
    stored_bits: ClassVar[int | None] = None  # bits the returned model stores its conv/linear weights in

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings" in cls.__dict__:
            raise TypeError(f"{cls.__name__} sets `settings`; declare a settings dataclass as `settings_type` instead")
        if not dataclasses.is_dataclass(cls.settings_type):
            raise TypeError(f"{cls.__name__}.settings_type must be a dataclass, got {cls.settings_type!r}")

    def effective_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The method's defaults merged with ``settings`` (a case's), checked: an unknown key or a
        value of the wrong type (where cheap to check) raises ConfigError."""
        defaults = self.settings
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ConfigError(f"method {self.name} has no settings {sorted(unknown)}; valid: {sorted(defaults)}")
        merged = {**defaults, **settings}
        hints = typing.get_type_hints(self.settings_type)
        for key, value in settings.items():
            if not _accepts(hints[key], value):
                yaml_float = isinstance(value, str) and _accepts(hints[key], 1.5)  # YAML reads 1e-4 as a string
                raise ConfigError(f"setting {key} of method {self.name} must be {_type_text(hints[key])}, got {value!r} "
                                  f"({type(value).__name__}); fix the case's settings"
                                  + (" (write a float with a dot: 1.0e-4, not 1e-4)" if yaml_float else ""))
        self.settings_type(**merged)  # the dataclass's own checks, if it has any (__post_init__)
        return merged

    def label(self, settings: Mapping[str, Any], tag: str | None = None) -> str:
        """The legend text of a row of this method: its name and, where they matter, its
        effective ``settings`` (``tag``: the case's tag). Default: the name."""
        return self.name

    def __call__(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        """Validate, deep-copy the input (methods never mutate what they are given), compress."""
        if budget.kind not in self.budget_kinds:
            raise BudgetError(f"method {self.name} takes budget kinds {', '.join(self.budget_kinds)}, "
                              f"not {budget.kind!r}; fix the case's budget in params.yaml")
        ctx.settings = self.effective_settings(ctx.settings)
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
        ctx.settings = self.effective_settings(ctx.settings)
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
        ``ctx.settings`` holds the method's defaults merged with the case's settings. For the
        methods that size a model to the budget; feasibility.py itself checks what
        ``keeps_architecture`` and ``stored_bits`` declare."""
        return None


METHODS: Registry[Method] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}.family {cls.family!r} is not one of {FAMILIES}")
    METHODS.register(cls.name)(cls())
    return cls
