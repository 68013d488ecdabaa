"""Fashion-MNIST through torchvision, offline from a mirror or online through its downloader."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import check_integrity

from ..errors import IntegrityError
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


def _gunzip_md5(path: Path) -> str:
    digest = hashlib.md5()
    with gzip.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, filename: str, md5: str) -> bool:
    """Official gz md5, or (Debian) the official decompressed md5."""
    return check_integrity(str(path), md5) or _gunzip_md5(path) == DECOMPRESSED_MD5[filename]


def _stage_local(mirrors: list[str], raw_dir: Path) -> dict[str, str] | None:
    """Copy verified files from the first local mirror that has them into ``raw_dir``."""
    sums = {}
    for url, md5 in FashionMNIST.resources:
        filename = url.rsplit("/", 1)[-1]
        found = find_local(mirrors, SUBDIRS, filename)
        if found is None:
            return None
        if not _verified(found, filename, md5):
            actual = hashlib.md5(found.read_bytes()).hexdigest()
            raise IntegrityError(f"corrupt file {found}: expected md5 {md5}, got {actual}; fix: {FIX}")
        raw_dir.mkdir(parents=True, exist_ok=True)
        with gzip.open(found, "rb") as src, open(raw_dir / filename[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
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
