"""Questions about the case cache that do not decide a model (kept out of harness.py, whose
source is part of every cache key)."""

from __future__ import annotations

from .cases import Case
from .config import Paths, default_paths
from .datasets import load_splits
from .harness import cache_key
from .methods import METHODS
from .teachers import load_teacher


def is_cached(case: Case, paths: Paths | None = None) -> bool:
    """True when the case's compressed model is cached, or its method is not cacheable (it is
    recomputed in every run, cheaply)."""
    paths = paths or default_paths()
    if not METHODS.get(case.method).cacheable:
        return True
    data = load_splits(case.dataset, {"subset": case.subset}, paths)
    _, meta = load_teacher(case.teacher, paths)
    key = cache_key(case, data.data_md5, meta["md5"])
    return (paths.cache / case.tier / case.case_id / key / "model.pt").is_file()
