"""The environment fingerprint stamped on every leaderboard and report."""

from __future__ import annotations

import hashlib
import os
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


def cpu_flags_md5() -> str | None:
    """md5 of the sorted CPU feature flags: tells apart CPUs that share a model string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                return hashlib.md5(flags.encode()).hexdigest()
    except OSError:
        pass
    return None


def cpu_caches() -> str | None:
    """The first core's cache sizes, e.g. "L1d 48K, L1i 32K, L2 2048K, L3 307200K"."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        caches.append(f"L{level}{ {'Data': 'd', 'Instruction': 'i'}.get(kind, '')} {size}")
    return ", ".join(caches) or None


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
            "cpu_flags_md5": cpu_flags_md5(), "cpu_cores": os.cpu_count(), "cpu_caches": cpu_caches(),
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "quantized_engine": torch.backends.quantized.engine, "commit": commit, "dirty": dirty}


def board_roofline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"roofline": peaks}`` for a board's environment: the GEMM peaks its rows were measured
    against (the first row's that has them; rows from one run share them), or {} for older rows."""
    peaks = next((r["environment"]["roofline"] for r in rows if (r.get("environment") or {}).get("roofline")), None)
    return {"roofline": peaks} if peaks else {}
