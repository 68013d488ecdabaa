"""Method registry; importing this package registers every built-in method."""

from . import (  # noqa: F401  (registration side effects)
    arch, baseline, distill, lowrank, prune, prune_structured, quant, quant_deploy, quant_manual, quant_weight)
from .base import FAMILIES, METHODS, Context, Method, register

__all__ = ["FAMILIES", "METHODS", "Context", "Method", "register"]
