"""Compressed models in a DVC remote: a tier's case cache is the output of its ``compress@<tier>``
stage (dvc.yaml, heavy/dvc.yaml), stored in the DVC remote ``models``.

An entry's folder name is already its content address by inputs (``harness.cache_key``), and DVC
stores the folder's files by content, so a push uploads only new models. The documented path:

- where the models are made (a GPU box, a Slurm cluster): ``slimbench compress --tier T ...``
  (which ends by recording the tier's cache in ``dvc.lock``, ``record`` below), ``dvc push``, and
  ``git commit``/``git push`` of the lock file;
- where they are measured: ``git pull``, ``dvc pull compress@T`` (``heavy/dvc.yaml:compress@T``
  for the heavy tiers), ``slimbench run --tier T --cached-only``.

Unfinished training state (``.resume-<key>``) and half-written entries are not models: the
project's ``.dvcignore`` keeps them out of the recorded folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def record(root: Path, tier: str) -> str | None:
    """Record ``.slimbench-cache/<tier>`` in its stage's lock file (``dvc commit --force``), so that
    ``dvc push`` uploads the models just made. Returns a line saying what was done, or None where
    the folder is no stage's output (a project without DVC, a tier without a ``compress`` stage)
    or when running inside a DVC stage (``dvc repro`` records it itself)."""
    cache_dir = root / ".slimbench-cache" / tier
    if os.environ.get("DVC_STAGE") or not (root / ".dvc").is_dir() or not cache_dir.is_dir():
        return None
    from dvc.exceptions import OutputNotFoundError
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        try:
            (out,) = repo.find_outs_by_path(str(cache_dir))
        except OutputNotFoundError:
            return None
        repo.commit(str(cache_dir), force=True)
        lock = Path(out.stage.dvcfile.relpath).with_suffix(".lock")
        remote = out.remote or "the default remote"
    return (f"recorded {cache_dir.relative_to(root)} in {lock} (stage {out.stage.addressing}): `dvc push` "
            f"uploads its models to {remote}; commit {lock} so that others can `dvc pull {out.stage.addressing}`")
