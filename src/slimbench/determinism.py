"""Deterministic case runs: every generator seeded, deterministic kernels required.

Kept apart from training.py, whose source is a dependency of every teacher stage in dvc.yaml.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed every generator and require deterministic kernels while one case is made.

    Same case, seed, machine and thread count then give bit-identical weights: the student's
    initial weights come from ``seed`` (not from whatever the process drew before), and an op
    without a deterministic kernel raises instead of silently varying (cuBLAS needs its
    workspace pinned for that, set here before CUDA starts).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
