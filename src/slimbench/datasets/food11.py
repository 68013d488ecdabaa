"""Food-11 in the course layout: training/, validation/, evaluation/ with files `<label>_<n>.jpg`."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from ..errors import IntegrityError
from ..fileio import md5sum
from .base import ImageSet, RawDataset, combine_md5
from .mirrors import describe, find_local

NUM_CLASSES = 11
CLASSES = ["bread", "dairy_product", "dessert", "egg", "fried_food", "meat", "noodles_pasta",
           "rice", "seafood", "soup", "vegetable_fruit"]
FIX = "point SLIMBENCH_MIRROR at a folder holding food11/{training,validation,evaluation}/"


def load_food11(mirrors: list[str], online: bool, image_size: int = 64) -> RawDataset:
    """Train pool = training/ + validation/ (our own seeded validation split is carved from it);
    test = evaluation/. Images are resized to ``image_size`` squared."""
    root = find_local(mirrors, [], "food11")
    if root is None or not (root / "training").is_dir():
        raise IntegrityError(f"Food-11 folders not found in {describe(mirrors)}; fix: {FIX}")
    sums: dict[str, str] = {}
    train = _read_folders([root / "training", root / "validation"], image_size, sums)
    test = _read_folders([root / "evaluation"], image_size, sums)
    return RawDataset(train, test, CLASSES, combine_md5(sums), (0.554, 0.450, 0.343), (0.231, 0.241, 0.240))


def _read_folders(folders: list[Path], size: int, sums: dict[str, str]) -> ImageSet:
    images, labels = [], []
    for folder in folders:
        for path in sorted(folder.glob("*.jpg")) if folder.is_dir() else []:
            label = _label_of(path)
            img = decode_image(str(path), mode=ImageReadMode.RGB)
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)[0]
            images.append(img.round().clamp(0, 255).to(torch.uint8))
            labels.append(label)
            sums[f"{folder.name}/{path.name}"] = md5sum(path)
    if not images:
        raise IntegrityError(f"no `<label>_<n>.jpg` files in {', '.join(map(str, folders))}; fix: {FIX}")
    return ImageSet(torch.stack(images), torch.tensor(labels))


def _label_of(path: Path) -> int:
    head = path.stem.split("_", 1)[0]
    if not head.isdigit() or not 0 <= int(head) < NUM_CLASSES:
        raise IntegrityError(f"{path} is not named `<label>_<n>.jpg` with label 0..{NUM_CLASSES - 1}; fix: {FIX}")
    return int(head)
