"""CIFAR-10 (torchvision, for online users) and CIFAR-10-JPEG (the lossy local copy, its own dataset)."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import extract_archive
from torchvision.io import decode_jpeg

from ..errors import IntegrityError
from ..fileio import verify_md5
from .base import ImageSet, RawDataset, combine_md5
from .mirrors import describe, find_local, remote_mirrors

# The public CIFAR ResNet teachers were trained with these statistics; keep them so they load as is.
TEACHER_MEAN = (0.485, 0.456, 0.406)
TEACHER_STD = (0.229, 0.224, 0.225)
CIFAR10_FIX = ("put cifar-10-python.tar.gz in a mirror folder (SLIMBENCH_MIRROR=<dir> holding "
               "cifar10/cifar-10-python.tar.gz) or allow online downloads with SLIMBENCH_ONLINE=1")
JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
JPEG_MD5 = "1b8efc6b8e65c52ec0ceeeba50aeeaa5"
JPEG_FIX = ("run `dvc pull datasets.dvc` or point SLIMBENCH_MIRROR at a folder holding "
            "cifar10-jpeg/cifar10-jpeg.tar.gz (e.g. ../shared/datasets)")


def load_cifar10(mirrors: list[str], online: bool) -> RawDataset:
    """Lossless CIFAR-10 through torchvision: a local archive (md5 checked) or its downloader."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = find_local(mirrors, ["cifar10", "cifar-10"], CIFAR10.filename)
        if archive is not None:
            verify_md5(archive, CIFAR10.tgz_md5, CIFAR10_FIX)
            extract_archive(str(archive), tmp)
        else:
            urls = remote_mirrors(mirrors, "cifar10")
            if not urls and not online:
                raise IntegrityError(f"CIFAR-10 archive not found in {describe(mirrors)}; fix: {CIFAR10_FIX}")
            cls = type("CIFAR10Mirror", (CIFAR10,), {"url": urls[0] + CIFAR10.filename}) if urls else CIFAR10
            cls(tmp, train=True, download=True)
        train, test = (CIFAR10(tmp, train=t, download=False) for t in (True, False))
        return RawDataset(_to_set(train.data, train.targets), _to_set(test.data, test.targets),
                          list(train.classes), combine_md5({CIFAR10.filename: CIFAR10.tgz_md5}),
                          TEACHER_MEAN, TEACHER_STD)


def _to_set(hwc: np.ndarray, targets: list[int]) -> ImageSet:
    return ImageSet(torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous(), torch.tensor(targets))


def load_cifar10_jpeg(mirrors: list[str], online: bool) -> RawDataset:
    """Decode the JPEG copy: ``{train,test}/<class>/NNNN.jpg``, classes in CIFAR-10 order."""
    archive = find_local(mirrors, ["cifar10-jpeg"], JPEG_ARCHIVE)
    if archive is None:
        raise IntegrityError(f"{JPEG_ARCHIVE} not found in {describe(mirrors)} (it has no online "
                             f"source); fix: {JPEG_FIX}")
    verify_md5(archive, JPEG_MD5, JPEG_FIX)
    parts = _decode_tar(archive)
    classes = sorted({cls for split in parts.values() for cls, _ in split})
    if len(classes) != 10:
        raise IntegrityError(f"{archive} holds {len(classes)} classes, expected 10; fix: {JPEG_FIX}")
    sets = {}
    for split, items in parts.items():
        items.sort(key=lambda it: (classes.index(it[0]), it[1][0]))
        images = torch.stack([img for _, (_, img) in items])
        labels = torch.tensor([classes.index(cls) for cls, _ in items])
        sets[split] = ImageSet(images, labels)
    return RawDataset(sets["train"], sets["test"], classes, combine_md5({JPEG_ARCHIVE: JPEG_MD5}),
                      TEACHER_MEAN, TEACHER_STD)


def _decode_tar(archive: Path) -> dict[str, list]:
    parts: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            split, cls, fname = Path(member.name).parts[-3:]
            data = torch.frombuffer(bytearray(tar.extractfile(member).read()), dtype=torch.uint8)
            parts[split].append((cls, (fname, decode_jpeg(data))))
    return parts
