"""Method registry; importing this package registers every built-in method."""

from . import arch, baseline, distill, lowrank, prune, prune_structured, quant, quant_manual, quant_weight  # noqa: F401  (registration side effects)
from .base import FAMILIES, METHODS, Context, Method, register

__all__ = ["FAMILIES", "METHODS", "Context", "Method", "register"]
