"""File helpers: md5 sums, atomic writes and folder swaps, locks, and the cleaning of temporaries
that a killed process left, so an interrupted or concurrent run leaves nothing half-written."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DiskFullError, IntegrityError

# Temporaries carry the pid of the process writing them: `.<name>.pid<N>.<random>.tmp`.
_TEMPORARY = re.compile(r"^\..*\.pid(\d+)\..*\.tmp$")


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20, opener: Callable[..., Any] = open) -> str:
    """Hex md5 of a file's bytes (of what ``opener(path, "rb")`` reads: gzip.open gives the
    decompressed content's)."""
    digest = hashlib.md5()
    with opener(path, "rb") as fh:
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
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with disk_full_is_one_line(path.parent):
            write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_prefix(path: Path) -> str:
    """Name prefix of a temporary standing in for ``path``, owned by this process."""
    return f".{path.name}.pid{os.getpid()}."


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries in ``folder`` whose writing process is gone (a kill mid-write leaves
    them); a live process's temporaries are left alone. Returns what was removed."""
    removed = []
    for entry in sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []:
        match = _TEMPORARY.match(entry.name)
        owner = int(match.group(1)) if match else None  # None: an older slimbench's, without a pid
        if owner is not None and (owner == os.getpid() or pid_alive(owner)):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def locked(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (fcntl.flock; released when the process dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"slimbench: waiting for another process writing {what} ({lock_path})", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_RENAME_EXCHANGE = 2


def swap_in(staged: Path, target: Path) -> None:
    """Put the folder ``staged`` at ``target`` in one step; the previous ``target`` ends at
    ``staged`` (the caller removes it). Linux swaps the two atomically (renameat2
    RENAME_EXCHANGE); elsewhere two renames leave a short window without ``target``, which
    ``restore_interrupted_swap`` repairs."""
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        return
    aside = staged.with_name(staged.name.removesuffix(".tmp") + "-previous.tmp")
    os.rename(target, aside)
    os.rename(staged, target)
    os.rename(aside, staged)


def _exchange(a: Path, b: Path) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def restore_interrupted_swap(target: Path) -> None:
    """After a kill between swap_in's two fallback renames: put the previous folder back."""
    if target.exists():
        return
    for aside in target.parent.glob(f".{target.name}.pid*-previous.tmp"):
        os.rename(aside, target)
        return


@contextmanager
def disk_full_is_one_line(folder: Path, needed: int | None = None) -> Iterator[None]:
    """Turn ENOSPC inside the block (or a DiskFullError of an inner write) into a DiskFullError
    naming ``folder`` and, where given, the space needed."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise
        existing = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        need = f", about {_mb(needed)} needed" if needed else ""
        raise DiskFullError(f"no space left on device writing in {folder} ({_mb(free)} free{need}); fix: free "
                            "space on that filesystem and rerun; the files there were left as they were") from None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0


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
