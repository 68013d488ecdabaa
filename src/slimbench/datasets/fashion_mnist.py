"""Fashion-MNIST through torchvision, offline from a mirror or online through its downloader."""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST

from ..errors import IntegrityError
from ..fileio import md5sum
from .base import ImageSet, RawDataset, combine_md5
from .mirrors import describe, find_local, remote_mirrors

SUBDIRS = ["fashion-mnist", "FashionMNIST/raw"]
# md5 of the decompressed official files: Debian's package rewrote the gzip headers, so its
# .gz sums differ from torchvision's while these stay equal.
DECOMPRESSED_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
FIX = ("put the official files in datasets/fashion-mnist/ (`dvc pull datasets.dvc`), point "
       "SLIMBENCH_MIRROR at a folder holding them, `apt-get install dataset-fashion-mnist`, "
       "or allow online downloads with SLIMBENCH_ONLINE=1")
CORRUPT_FIX = ("replace it with the official file (datasets/ comes back from the DVC cache with "
               "`dvc checkout --force datasets.dvc`) or delete it")
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)  # truncated, bad header/CRC, bad data


class _Corrupt(Exception):
    """A mirror's copy of one file failed verification; ``str`` says how."""


def _verified(path: Path, filename: str, md5: str) -> bool:
    """Official gz md5, or (Debian) the official decompressed md5; an unreadable gzip is not."""
    try:
        _check(path, filename, md5)
        return True
    except _Corrupt:
        return False


def _check(path: Path, filename: str, md5: str) -> None:
    """Raise _Corrupt naming ``path``, both md5 sums and, for a broken gzip, why it is unreadable."""
    actual = md5sum(path)
    if actual == md5:
        return
    why = ""
    try:
        if md5sum(path, opener=gzip.open) == DECOMPRESSED_MD5[filename]:
            return
    except GZIP_ERRORS as exc:
        why = f" (unreadable gzip: {_one_line(exc)})"
    raise _Corrupt(f"corrupt file {path}: expected md5 {md5}, got {actual}{why}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _find_verified(mirrors: list[str], filename: str, md5: str) -> Path | None:
    """The first copy of ``filename`` in the local mirrors that verifies: a corrupt copy falls
    through to the next mirror. None when no mirror has a copy; IntegrityError naming every
    copy found when all of them are corrupt."""
    bad = []
    for mirror in mirrors:
        found = find_local([mirror], SUBDIRS, filename)
        if found is None:
            continue
        try:
            _check(found, filename, md5)
        except _Corrupt as exc:
            bad.append(str(exc))
            continue
        if bad:  # say so: the skipped copy (often DVC-tracked datasets/) stays broken
            print(f"slimbench: skipped {'; '.join(bad)}; using {found}", file=sys.stderr)
        return found
    if not bad:
        return None
    raise IntegrityError(f"{'; '.join(bad)}; fix: {CORRUPT_FIX}, or {FIX}")


def _stage_local(mirrors: list[str], raw_dir: Path) -> dict[str, str] | None:
    """Decompress verified files from the local mirrors into ``raw_dir`` (a temporary folder);
    None when a file is in no local mirror. Every file is checked first, so a corrupt copy is
    named even when another file is missing."""
    located = {}
    for url, md5 in FashionMNIST.resources:
        filename = url.rsplit("/", 1)[-1]
        located[filename] = (_find_verified(mirrors, filename, md5), md5)
    if any(found is None for found, _ in located.values()):
        return None
    raw_dir.mkdir(parents=True, exist_ok=True)
    sums = {}
    for filename, (found, md5) in located.items():
        try:
            with gzip.open(found, "rb") as src, open(raw_dir / filename[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        except GZIP_ERRORS as exc:  # changed between the check and the copy
            raise IntegrityError(f"corrupt file {found}: unreadable gzip ({_one_line(exc)}); "
                                 f"fix: {CORRUPT_FIX}, or {FIX}") from None
        sums[filename] = md5
    return sums


def load_raw(mirrors: list[str], online: bool) -> RawDataset:
    """Fashion-MNIST's official train/test parts as uint8 tensors."""
    with tempfile.TemporaryDirectory() as tmp:
        raw_dir = Path(tmp) / "FashionMNIST" / "raw"
        sums = _stage_local(mirrors, raw_dir)
        if sums is None:
            urls = remote_mirrors(mirrors, "fashion-mnist")
            if not urls and not online:
                raise IntegrityError(f"Fashion-MNIST files not found in {describe(mirrors)}; fix: {FIX}")
            _download(tmp, urls)
            sums = {url.rsplit("/", 1)[-1]: md5 for url, md5 in FashionMNIST.resources}
        train, test = (FashionMNIST(tmp, train=t, download=False) for t in (True, False))
        return RawDataset(_to_set(train), _to_set(test), list(train.classes), combine_md5(sums),
                          mean=(0.2860,), std=(0.3530,))


def _download(root: str, urls: list[str]) -> None:
    """torchvision's own download-and-verify path, through given mirrors or its defaults."""
    cls = type("FashionMNISTMirror", (FashionMNIST,), {"mirrors": urls}) if urls else FashionMNIST
    cls(root, train=True, download=True)
    # The subclass stores files under its own class name; move them where FashionMNIST reads.
    if urls:
        src, dst = Path(root) / cls.__name__ / "raw", Path(root) / "FashionMNIST" / "raw"
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            shutil.move(str(f), dst / f.name)


def _to_set(ds: FashionMNIST) -> ImageSet:
    return ImageSet(ds.data.unsqueeze(1).to(torch.uint8).contiguous(), ds.targets.long())
