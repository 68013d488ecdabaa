"""Budgets: what a compressed model must fit in, and the check of whether it did."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BudgetError

BUDGET_KINDS = ("params", "sparsity", "bytes", "bits", "speedup", "macs_speedup", "none")
SPARSITY_TOLERANCE = 1e-3  # global magnitude pruning can land a few weights off on ties


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
        """Short id part: params100k, sparsity90, bytes300k, bits8, speedup2x, nobudget."""
        v = self.value
        if self.kind == "none":
            return "nobudget"
        if self.kind == "sparsity":
            return f"sparsity{round(v * 100):g}"
        if self.kind == "speedup":
            return f"speedup{v:g}x"
        if self.kind == "macs_speedup":
            return f"macs{v:g}x"
        if self.kind in ("params", "bytes") and v % 1000 == 0:
            return f"{self.kind}{v / 1e6:g}m" if v % 1e5 == 0 and v >= 1e6 else f"{self.kind}{v / 1e3:g}k"
        return f"{self.kind}{v:g}"

    def is_met(self, measured: dict) -> bool:
        """Check against harness measurements (params, sparsity, size_bytes, bits, speedup)."""
        if self.kind == "none":
            return True
        if self.kind == "params":
            return measured["params"] <= self.value
        if self.kind == "sparsity":
            return measured["sparsity"] >= self.value - SPARSITY_TOLERANCE
        if self.kind == "bytes":
            return measured["size_bytes"] <= self.value
        if self.kind == "bits":
            return measured["weight_bits"] <= self.value
        if self.kind == "macs_speedup":
            return measured["reference_macs"] / measured["macs"] >= self.value
        return measured["speedup"] >= self.value
