"""File helpers: md5 sums and atomic writes, so an interrupted run leaves nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import IntegrityError


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str, fix: str) -> None:
    """Raise IntegrityError naming the file, both sums and ``fix`` unless the md5 matches."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"missing file {path} (expected md5 {expected}); fix: {fix}")
    actual = md5sum(path)
    if actual != expected:
        raise IntegrityError(f"corrupt file {path}: expected md5 {expected}, got {actual}; fix: {fix}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``.

    The rename is atomic on one filesystem, so readers see the old file or the new one, never
    a partial one; on any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through a file object, atomically.

    Given a path, torch.save names the zip archive's root folder after the file, so saving via
    a random temporary name would make identical content hash differently on every run.
    """
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, write)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False)
            fh.write("\n")

    atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)
