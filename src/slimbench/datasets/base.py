"""The shapes every dataset shares: uint8 image tensors, seeded splits, a prepared-tensor cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import IntegrityError
from ..fileio import atomic_torch_save


@dataclass
class ImageSet:
    """Images as uint8 [N, C, H, W] with int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class RawDataset:
    """What a source yields: its official train and test parts and where they came from."""

    train: ImageSet
    test: ImageSet
    classes: list[str]
    source_md5: str  # md5 over the source files' md5 sums: identifies the data in cache keys
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DataSplits:
    """Train / validation (carved from train, seeded) / test, plus what a model needs to know."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]
    data_md5: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


def combine_md5(parts: dict[str, str]) -> str:
    """One md5 standing for several files' md5 sums (order independent)."""
    text = "\n".join(f"{k}:{v}" for k, v in sorted(parts.items()))
    return hashlib.md5(text.encode()).hexdigest()


def seeded_split(train: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split ``train`` into (train, val) with a fixed permutation from ``seed``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(train) * val_fraction))
    return train.take(perm[n_val:]), train.take(perm[:n_val])


def seeded_subset(part: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A seeded random subset of ``n`` items (all of them when n is None or too large)."""
    if n is None or n >= len(part):
        return part
    perm = torch.randperm(len(part), generator=torch.Generator().manual_seed(seed))
    return part.take(perm[:n].sort().values)


def prepared_fix(path: Path) -> str:
    """How to rebuild a prepared file, by hand or through its DVC stage."""
    name = Path(path).stem
    return f"delete it and run `slimbench prepare {name}` (or `dvc repro data@{name}`)"


def content_md5(blob: dict) -> str:
    """md5 over a prepared blob's tensors (dtype, shape and bytes) and its metadata.

    Recorded by save_prepared and checked by load_prepared: torch.load does not check the
    bytes of tensor data, so a flipped byte would otherwise load as a different image.
    """
    digest = hashlib.md5()
    for part in ("train", "test"):
        for tensor in blob[part]:
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{part}:{array.dtype}:{tuple(array.shape)};".encode())
            digest.update(memoryview(array).cast("B"))
    meta = {"classes": list(blob["classes"]), "source_md5": blob["source_md5"],
            "mean": [float(v) for v in blob["mean"]], "std": [float(v) for v in blob["std"]]}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def save_prepared(path: Path, raw: RawDataset) -> None:
    """Write decoded tensors atomically with their content md5, so an interrupted prepare
    leaves no partial cache and later damage is caught on load."""
    blob = {"train": (raw.train.images, raw.train.labels), "test": (raw.test.images, raw.test.labels),
            "classes": raw.classes, "source_md5": raw.source_md5, "mean": raw.mean, "std": raw.std}
    blob["content_md5"] = content_md5(blob)
    atomic_torch_save(path, blob)


def load_prepared(path: Path) -> RawDataset:
    """Read tensors written by save_prepared, checking their content md5; a damaged or
    outdated file raises a one-line IntegrityError that says how to rebuild it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        expected = blob.get("content_md5")
        actual = content_md5(blob) if expected else None
        raw = RawDataset(ImageSet(*blob["train"]), ImageSet(*blob["test"]), list(blob["classes"]),
                         blob["source_md5"], tuple(blob["mean"]), tuple(blob["std"]))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same fix
        raise IntegrityError(f"corrupt prepared data {path} ({exc.__class__.__name__}); "
                             f"fix: {prepared_fix(path)}") from None
    if expected is None:
        raise IntegrityError(f"prepared data {path} has no content md5 (written before slimbench "
                             f"checked it); fix: {prepared_fix(path)}")
    if actual != expected:
        raise IntegrityError(f"corrupt prepared data {path}: content md5 {actual}, recorded {expected}; "
                             f"fix: {prepared_fix(path)}")
    return raw
