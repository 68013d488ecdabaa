"""scikit-learn's bundled 8x8 digits (no download): for fast smoke runs."""

from __future__ import annotations

import hashlib

import torch
from sklearn.datasets import load_digits as sk_load_digits

from .base import ImageSet, RawDataset, seeded_split

TEST_FRACTION = 0.2  # digits has no official test part; a fixed seeded one is carved here
TEST_SEED = 0


def load_digits(mirrors: list[str], online: bool) -> RawDataset:
    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images * 16).clamp(0, 255).to(torch.uint8).unsqueeze(1)
    everything = ImageSet(images.contiguous(), torch.from_numpy(bunch.target).long())
    train, test = seeded_split(everything, TEST_FRACTION, TEST_SEED)
    md5 = hashlib.md5(images.numpy().tobytes() + bunch.target.tobytes()).hexdigest()
    return RawDataset(train, test, [str(d) for d in range(10)], md5, mean=(0.2104,), std=(0.3732,))
