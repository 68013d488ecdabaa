"""Dataset registry: name -> raw loader; `load_dataset` adds the prepared cache and seeded splits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Paths, default_paths, load_params
from ..registry import Registry
from .base import DataSplits, ImageSet, RawDataset, load_prepared, save_prepared, seeded_split, seeded_subset
from .cifar10 import load_cifar10, load_cifar10_jpeg
from .digits import load_digits
from .fashion_mnist import load_raw as load_fashion_mnist
from .food11 import load_food11

__all__ = ["DATASETS", "DataSplits", "ImageSet", "RawDataset", "DatasetSpec", "load_dataset", "load_splits", "prepare"]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its raw loader and a one-line description."""

    load_raw: Callable[..., RawDataset]
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.register("fashion_mnist")(DatasetSpec(load_fashion_mnist, "Fashion-MNIST 28x28 grey, 10 classes"))
DATASETS.register("cifar10")(DatasetSpec(load_cifar10, "CIFAR-10 (lossless, torchvision; online or local archive)"))
DATASETS.register("cifar10_jpeg")(DatasetSpec(load_cifar10_jpeg, "CIFAR-10-JPEG: lossy JPEG copy, its own dataset"))
DATASETS.register("food11")(DatasetSpec(load_food11, "Food-11 course layout, 11 classes, resized"))
DATASETS.register("digits")(DatasetSpec(load_digits, "scikit-learn 8x8 digits, for smoke runs"))


def online_allowed() -> bool:
    return os.environ.get("SLIMBENCH_ONLINE", "0") == "1"


def prepare(name: str, paths: Paths | None = None, force: bool = False) -> RawDataset:
    """Decode ``name`` from its raw source into data/prepared/<name>.pt (once) and return it."""
    spec = DATASETS.get(name)
    paths = paths or default_paths()
    target = paths.prepared / f"{name}.pt"
    if target.is_file() and not force:
        return load_prepared(target)
    raw = spec.load_raw(paths.mirrors(), online_allowed())
    save_prepared(target, raw)
    return raw


def load_dataset(name: str, *, seed: int = 0, val_fraction: float = 0.1,
                 subset: dict[str, int] | None = None, paths: Paths | None = None) -> DataSplits:
    """Train/validation/test splits of ``name``; ``subset`` caps each part ({"train": 2000, ...})."""
    raw = prepare(name, paths)
    train, val = seeded_split(raw.train, val_fraction, seed)
    test = raw.test
    notes = {}
    if subset:
        train = seeded_subset(train, subset.get("train"), seed)
        val = seeded_subset(val, subset.get("val"), seed)
        test = seeded_subset(test, subset.get("test"), seed)
        notes["subset"] = dict(subset)
    return DataSplits(name, train, val, test, raw.classes, raw.source_md5, raw.mean, raw.std, notes)


def load_splits(dataset: str, settings: dict | None = None, paths: Paths | None = None) -> DataSplits:
    """``load_dataset`` with the project-wide split settings of params.yaml (`data:`)."""
    paths = paths or default_paths()
    data_params = load_params(paths.root).get("data", {})
    return load_dataset(dataset, seed=data_params.get("split_seed", 0),
                        val_fraction=data_params.get("val_fraction", 0.1),
                        subset=(settings or {}).get("subset"), paths=paths)
