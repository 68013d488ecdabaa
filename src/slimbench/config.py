"""Where things live and what params.yaml says. Nothing here runs at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def project_root() -> Path:
    """The directory holding params.yaml: $SLIMBENCH_ROOT, else the nearest ancestor of cwd."""
    env = os.environ.get("SLIMBENCH_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file():
            return d
    raise ConfigError(f"no params.yaml in {here} or its parents; fix: run from the slimbench "
                      "checkout or set SLIMBENCH_ROOT")


@dataclass(frozen=True)
class Paths:
    """The project's directories, all under one root."""

    root: Path

    @property
    def raw(self) -> Path:  # DVC-tracked raw files (datasets.dvc)
        return self.root / "datasets"

    @property
    def prepared(self) -> Path:  # decoded tensors, output of the `data` stage
        return self.root / "data" / "prepared"

    @property
    def teachers(self) -> Path:
        return self.root / "teachers"

    @property
    def cache(self) -> Path:  # compressed models per case
        return self.root / ".slimbench-cache"

    def results(self, tier: str) -> Path:
        return self.root / "results" / tier

    def mirrors(self) -> list[str]:
        """Places raw data is looked for: $SLIMBENCH_MIRROR (':'-separated), then params.yaml."""
        env = [m for m in os.environ.get("SLIMBENCH_MIRROR", "").split(os.pathsep) if m]
        listed = load_params(self.root).get("data", {}).get("mirrors", [])
        out = []
        for m in [*env, *listed]:
            is_url = "://" in m and not m.startswith("file://")
            out.append(m if is_url or Path(m).is_absolute() else str(self.root / m))
        return out


def default_paths() -> Paths:
    return Paths(project_root())


@lru_cache(maxsize=8)
def _load_params_cached(path: str, mtime: float) -> dict[str, Any]:
    try:
        with open(path) as fh:
            params = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed {path}: {exc}; fix: correct the YAML syntax") from None
    if not isinstance(params, dict):
        raise ConfigError(f"malformed {path}: top level must be a mapping")
    return params


def load_params(root: Path | None = None) -> dict[str, Any]:
    """params.yaml as a dict (cached until the file changes)."""
    path = (root or project_root()) / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"missing {path}; fix: run from the slimbench checkout")
    return _load_params_cached(str(path), path.stat().st_mtime)
