"""Shared fixtures for unit tests: the real project root and a tiny trained model on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimbench.config import Paths
from slimbench.datasets import load_dataset
from slimbench.models import get_model
from slimbench.training import Recipe, fit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def paths() -> Paths:
    return Paths(ROOT)


@pytest.fixture(scope="session")
def digits(paths):
    return load_dataset("digits", paths=paths)


@pytest.fixture(scope="session")
def digits_model(digits):
    """A small CNN trained for a few epochs on digits (well above chance)."""
    torch.manual_seed(0)
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, digits, Recipe(epochs=4, lr=0.05, batch_size=64))
    return model.eval()


def needs_shared(*parts: str):
    """Skip when ../shared (real data beside the checkout) is absent, e.g. on a laptop."""
    return pytest.mark.skipif(not SHARED.joinpath(*parts).exists(), reason=f"../shared/{'/'.join(parts)} absent")
