"""Budgets: what a compressed model must fit in, and the check of whether it did."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BudgetError

SPARSITY_TOLERANCE = 1e-3  # global magnitude pruning can land a few weights off on ties


@dataclass(frozen=True)
class KindSpec:
    """How one budget kind is checked and named: ``met(measured(m), value)`` says whether the harness
    measurements ``m`` meet a budget of ``value``; ``label(value)`` is the budget's case-id part."""

    measured: Callable[[dict], float]  # the measured quantity the budget bounds
    met: Callable[[float, float], bool]  # (measured, budget value) -> met; operator.le: an upper bound
    label: Callable[[float], str]


def _count_label(kind: str) -> Callable[[float], str]:
    """params100k, bytes1.5m; a value that is not a whole thousand in full (params256779)."""
    def label(v: float) -> str:
        if v % 1000 == 0:
            return f"{kind}{v / 1e6:g}m" if v % 1e5 == 0 and v >= 1e6 else f"{kind}{v / 1e3:g}k"
        return f"{kind}{v:g}"
    return label


KINDS: dict[str, KindSpec] = {
    "params": KindSpec(operator.itemgetter("params"), operator.le, _count_label("params")),
    "sparsity": KindSpec(operator.itemgetter("sparsity"), lambda got, v: got >= v - SPARSITY_TOLERANCE,
                         lambda v: f"sparsity{round(v * 100):g}"),
    "bytes": KindSpec(operator.itemgetter("size_bytes"), operator.le, _count_label("bytes")),
    "bits": KindSpec(operator.itemgetter("weight_bits"), operator.le, lambda v: f"bits{v:g}"),
    "speedup": KindSpec(operator.itemgetter("speedup"), operator.ge, lambda v: f"speedup{v:g}x"),
    "macs_speedup": KindSpec(lambda m: m["reference_macs"] / m["macs"], operator.ge, lambda v: f"macs{v:g}x"),
    "none": KindSpec(lambda m: 0.0, lambda got, v: True, lambda v: "nobudget"),  # nothing measured: always met
}
BUDGET_KINDS = tuple(KINDS)


@dataclass(frozen=True)
class Budget:
    """A budget of one kind: params/bytes/bits are upper bounds, sparsity/speedup lower bounds."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise BudgetError(f"unknown budget kind {self.kind!r}; valid kinds: {', '.join(BUDGET_KINDS)}")
        if self.kind == "none":
            return
        if not self.value > 0:
            raise BudgetError(f"budget {self.kind}={self.value} must be positive; fix the case in params.yaml")
        if self.kind == "sparsity" and self.value >= 1:
            raise BudgetError(f"sparsity budget {self.value} must be below 1 (a fraction of weights)")
        if self.kind == "bits" and self.value not in (1, 2, 4, 8, 16, 32):
            raise BudgetError(f"bits budget {self.value} must be one of 1, 2, 4, 8, 16, 32")

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Budget":
        """``{params: 100000}`` -> Budget("params", 100000); None -> no budget."""
        if not cfg:
            return cls("none", 0)
        if not isinstance(cfg, dict) or len(cfg) != 1:
            raise BudgetError(f"budget {cfg!r} must be one `kind: value` pair, e.g. {{params: 100000}}")
        (kind, value), = cfg.items()
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BudgetError(f"budget value {value!r} for {kind} is not a number") from None
        return cls(kind, number)

    @property
    def label(self) -> str:
        """Short id part: params100k, sparsity90, bytes300k, bits8, speedup2x, macs2x, nobudget."""
        return KINDS[self.kind].label(self.value)

    def is_met(self, measured: dict) -> bool:
        """Check against harness measurements (params, sparsity, size_bytes, weight_bits, speedup,
        reference_macs and macs): only the keys the budget's kind reads need be there."""
        spec = KINDS[self.kind]
        return spec.met(spec.measured(measured), self.value)
