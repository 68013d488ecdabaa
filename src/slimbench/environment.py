"""The environment fingerprint stamped on every leaderboard and report."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# What decides the numbers; results and lock files change during a run and do not count as dirty.
SOURCE_PATHS = ("src", "benchmarks", "params.yaml", "dvc.yaml", "pyproject.toml")


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes to code or params) of the checkout at ``root``; (None, None)
    outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", *SOURCE_PATHS], cwd=root,
                                capture_output=True, text=True, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None


def fingerprint(root: Path) -> dict[str, Any]:
    commit, dirty = git_state(root)
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "quantized_engine": torch.backends.quantized.engine, "commit": commit, "dirty": dirty}
