"""Sizing a model to a budget: the one bisection that width, rank-fraction and channel-ratio searches share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal


def bisect_fit(fits: Callable[[float], bool], safe: float, far: float, steps: int,
               far_probe: Literal["first", "second", "never"] = "second") -> float | None:
    """The setting nearest ``far`` that ``fits``, on the segment from ``safe`` (the cheapest model,
    expected to fit) to ``far`` (the largest, expected not to); None when ``safe`` does not fit.

    ``fits`` must turn false once, somewhere between the two ends (``safe`` may be the larger
    number: a channel ratio fits from its high end). ``far_probe`` says when ``far`` itself is
    tried, and returned if it fits: before ``safe`` ("first"), after it ("second") or not at all
    ("never"). Otherwise ``steps`` halvings keep the fitting end: the result fits and lies within
    ``|far - safe| / 2**steps`` of the boundary.
    """
    if far_probe == "first" and fits(far):
        return far
    if not fits(safe):
        return None
    if far_probe == "second" and fits(far):
        return far
    for _ in range(steps):
        mid = (safe + far) / 2
        safe, far = (mid, far) if fits(mid) else (safe, mid)
    return safe
